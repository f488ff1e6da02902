"""Settings: defaults, then a TOML file, then ``METERING_*`` environment overrides.

The file is the checkout's ``config/settings.toml`` (from any directory) or the one named by
``METERING_CONFIG`` (relative to the current directory); keys it leaves out keep their
defaults.  ``METERING_BILLING__PERIOD=day`` sets ``billing.period`` (a double underscore
separates nested keys).

A relative path in the settings (the SQLite file of ``database_url``, ``reports_dir``,
``pricing_file``) is relative to the settings file's directory, wherever it was set (file,
environment or code), so every command, run from any directory, uses the same files.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from metering.core.lifecycle import LifetimePolicy

ROOT = Path(__file__).resolve().parent.parent  # the checkout (scripts/bootstrap.sh installs it editable)
DEFAULT_CONFIG = ROOT / "config" / "settings.toml"
# Settings that name a file or directory; see resolve_paths.
PATH_KEYS = ("reports_dir", "pricing_file")
# A SQLite URL's file: ``sqlite+aiosqlite:///relative.db`` or ``:////absolute.db``, then ``?options``.
_SQLITE_FILE = re.compile(r"^(sqlite[^:]*:///)([^?]*)(.*)$", re.DOTALL)


class BillingSettings(msgspec.Struct, forbid_unknown_fields=True):
    period: Literal["month", "week", "day"] = "month"
    grace_seconds: int = 3600


class SchedulerSettings(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    settlement_recheck_seconds: int = 15
    billing_interval_seconds: int = 300
    report_interval_seconds: int = 900
    webhook_interval_seconds: int = 10
    lease_seconds: int = 300
    # Each billing tick runs the current period (refreshing drafts) and this many ended ones.
    billing_lookback_periods: int = 1
    # A day's report is written this long after the day ends, so late events still make it.
    report_grace_seconds: int = 3600
    # Each reports tick looks this many days back behind its watermark (late first events).
    report_lookback_days: int = 3
    # A backlog (first start, long outage) is caught up this many days per tick.
    report_max_days_per_tick: int = 31
    job_runs_retention_days: int = 30


class NetworkSettings(msgspec.Struct, forbid_unknown_fields=True):
    rpc_url: str
    usdc: str
    eip712_name: str = "USD Coin"
    eip712_version: str = "2"
    receivers: list[str] = msgspec.field(default_factory=list)
    finality: str | int = "safe"  # "safe" | "finalized" | a number of confirmations
    rpc_timeout_seconds: int = 10
    # false: the network is switched off (a default one too): its reports are rejected as
    # ``network_not_configured`` and its settlements are not re-checked until it is back.
    enabled: bool = True

    def __post_init__(self) -> None:
        text = str(self.finality).strip().lower()
        if text not in ("safe", "finalized") and not (text.isascii() and text.isdigit() and int(text) >= 1):
            raise ValueError(f"finality must be 'safe', 'finalized' or a number of confirmations, not {self.finality!r}")
        if self.rpc_timeout_seconds < 1:
            raise ValueError("rpc_timeout_seconds must be at least 1")


class WebhookSettings(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    secret_env: str = "METERING_WEBHOOK_SECRET"


class WebhookDeliverySettings(msgspec.Struct, forbid_unknown_fields=True):
    timeout_seconds: int = 10
    max_attempts: int = 12  # then the delivery is ``failed``
    backoff_seconds: int = 30  # after the first failure; doubles each attempt
    backoff_cap_seconds: int = 3600
    batch_size: int = 100  # deliveries per tick
    concurrency: int = 8
    # Events whose deliveries all ended (delivered or failed) are deleted after this long.
    retention_days: int = 30


class NatsSettings(msgspec.Struct, forbid_unknown_fields=True):
    """``[ingest.nats]``: consume lifecycle events from a NATS JetStream stream (metering.stream)."""

    url: str = "nats://127.0.0.1:4222"
    stream: str = "SANDBOX_EVENTS"  # created with ``subjects`` if it does not exist
    subjects: list[str] = msgspec.field(default_factory=lambda: ["platform.events.>"])
    durable: str = "metering"  # one durable pull consumer, shared by every instance
    dead_letter_subject: str = "metering.dead-letter"
    batch_size: int = 1000  # messages fetched, and stored in one transaction, at a time
    fetch_wait_seconds: float = 1.0  # a fetch returns after this long with what has come
    ack_wait_seconds: int = 60  # a message not acknowledged within this is delivered again

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError("ingest.nats.batch_size must be 1 to 10,000")
        if not self.subjects:
            raise ValueError("ingest.nats.subjects must name at least one subject")


class IngestSettings(msgspec.Struct, forbid_unknown_fields=True):
    nats: NatsSettings | None = None  # set: ``metering serve`` consumes the stream too


class LifetimeSettings(msgspec.Struct, forbid_unknown_fields=True):
    """The lifetime guard (CONTRACT 10): a sandbox running this long past its paid lifetime is
    an overrun; with ``bill_beyond = false`` its running time past that is not billed."""

    tolerance_seconds: int = 300
    bill_beyond: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance_seconds <= 31 * 86_400:
            raise ValueError("lifetime.tolerance_seconds must be between 0 and 2678400")

    @property
    def policy(self) -> LifetimePolicy:
        """What usage.compute.clip bills by; every caller passes its own settings' down."""
        return LifetimePolicy(self.tolerance_seconds * 1_000_000, self.bill_beyond)


class SpendSettings(msgspec.Struct, forbid_unknown_fields=True):
    # How often the scheduler checks budgets and overruns; a crossing is notified within this
    # (plus the webhook job's interval), well inside the 60 s CONTRACT 10 promises.
    check_interval_seconds: int = 10


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    # The defaults are what config/settings.toml says: the checkout's data/ and config/.
    database_url: str = f"sqlite+aiosqlite:///{ROOT / 'data' / 'metering.db'}"
    reports_dir: str = str(ROOT / "data" / "reports")
    pricing_file: str = str(DEFAULT_CONFIG.parent / "pricing.toml")
    admin_token: str | None = None
    # "auto": JSON lines, or a console format for people when standard error is a terminal.
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    max_body_bytes: int = 16 * 1024 * 1024
    max_batch_events: int = 10_000
    max_future_seconds: int = 300
    request_timeout_seconds: int = 30  # a request must arrive in full within this
    header_timeout_seconds: int = 10  # a new connection must start its request within this
    billing: BillingSettings = msgspec.field(default_factory=BillingSettings)
    scheduler: SchedulerSettings = msgspec.field(default_factory=SchedulerSettings)
    networks: dict[str, NetworkSettings] = msgspec.field(
        default_factory=lambda: {
            "eip155:8453": NetworkSettings(
                rpc_url="https://mainnet.base.org",
                usdc="0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
                eip712_name="USD Coin",
            ),
            "eip155:84532": NetworkSettings(
                rpc_url="https://sepolia.base.org",
                usdc="0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                eip712_name="USDC",
            ),
        }
    )
    webhooks: list[WebhookSettings] = msgspec.field(default_factory=list)
    webhook_delivery: WebhookDeliverySettings = msgspec.field(default_factory=WebhookDeliverySettings)
    ingest: IngestSettings = msgspec.field(default_factory=IngestSettings)
    lifetime: LifetimeSettings = msgspec.field(default_factory=LifetimeSettings)
    spend: SpendSettings = msgspec.field(default_factory=SpendSettings)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


class SettingsError(ValueError):
    """The configuration cannot be used; the message says which key."""


def _env_value(raw: str) -> Any:
    # Lists and tables can be given as JSON; everything else stays a string and
    # msgspec converts it (lax mode turns "3600" into 3600 and "false" into False).
    if raw[:1] in "[{":
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return raw
    return raw


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith("METERING_") or name == "METERING_CONFIG":
            continue
        path = name[len("METERING_") :].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _env_value(raw)
    return out


def _absolute(path: str, base: Path) -> str:
    return os.path.normpath(base / Path(path).expanduser())  # an absolute path stays as it is


def resolve_paths(values: dict[str, Any], base: Path) -> dict[str, Any]:
    """``values`` with every relative path made absolute against ``base``."""
    out = dict(values)
    for key in PATH_KEYS:
        if isinstance(out.get(key), str) and out[key]:
            out[key] = _absolute(out[key], base)
    url = out.get("database_url")
    found = _SQLITE_FILE.match(url) if isinstance(url, str) else None
    # In-memory and ``file:`` URI databases name no file of their own.
    if found and found[2] and found[2] != ":memory:" and not found[2].startswith("file:"):
        out["database_url"] = found[1] + _absolute(found[2], base) + found[3]
    return out


def load_settings(
    path: str | Path | None = None, environ: dict[str, str] | None = None, **overrides: Any
) -> Settings:
    environ = dict(os.environ if environ is None else environ)
    config_path = Path(path or environ.get("METERING_CONFIG") or DEFAULT_CONFIG)
    doc: dict[str, Any] = {}
    if config_path.exists():
        with config_path.open("rb") as fh:
            doc = tomllib.load(fh)
    elif path or environ.get("METERING_CONFIG"):
        raise SettingsError(f"config file not found: {config_path}")
    # Environment variables that are not settings (METERING_WEBHOOK_SECRET, say)
    # are secrets read elsewhere, not typos, so they are skipped rather than refused.
    env = {k: v for k, v in env_overrides(environ).items() if k in Settings.__struct_fields__}
    merged = _merge(_merge(_merge(msgspec.to_builtins(Settings()), doc), env), overrides)
    merged = resolve_paths(merged, config_path.resolve().parent)
    try:
        return msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid settings: {exc}") from exc
