"""The configured networks, resolved once per use into plain checked values."""

from __future__ import annotations

from dataclasses import dataclass

from metering.settings import NetworkSettings, Settings
from metering.settlements.payload import caip2

FINALITY_TAGS = ("safe", "finalized")


@dataclass(frozen=True)
class Network:
    caip2: str
    chain_id: int
    rpc_url: str  # may carry an API key: never logged, never in an error text
    usdc: str  # lowercase
    eip712_name: str
    eip712_version: str
    receivers: frozenset[str]  # lowercase
    finality: str | int  # "safe", "finalized" or a number of confirmations
    timeout_seconds: int

    @property
    def watches_reorgs(self) -> bool:
        """Whether a confirmed settlement can still leave the chain (not yet ``finalized``)."""
        return self.finality != "finalized"


def parse_finality(value: str) -> str | int:
    text = str(value).strip().lower()
    if text in FINALITY_TAGS:
        return text
    if text.isascii() and text.isdigit() and int(text) >= 1:
        return int(text)
    raise ValueError(f"finality must be 'safe', 'finalized' or a number of confirmations >= 1, not {value!r}")


def network_for(settings: Settings, network: str) -> Network | None:
    """The network configured under ``network`` (CAIP-2 or a v1 name) and not switched
    off (``enabled = false``), if any."""
    key = caip2(network)
    if key is None:
        return None
    conf: NetworkSettings | None = settings.networks.get(key)
    if conf is None:  # a v1 name used as the settings key
        conf = next((c for name, c in settings.networks.items() if caip2(name) == key), None)
    if conf is None or not conf.enabled:
        return None
    return Network(
        caip2=key,
        chain_id=int(key.split(":", 1)[1]),
        rpc_url=conf.rpc_url,
        usdc=conf.usdc.lower(),
        eip712_name=conf.eip712_name,
        eip712_version=conf.eip712_version,
        receivers=frozenset(r.lower() for r in conf.receivers),
        finality=parse_finality(conf.finality),
        timeout_seconds=conf.rpc_timeout_seconds,
    )
