"""Settlement tests: the service's Base network points at the session's anvil.

``network`` (a dict of NetworkSettings fields) can be overridden per module or test to
point the service somewhere else (a closed port, a fake RPC server).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from metering.db.base import now_us
from metering.settings import Settings, load_settings
from metering.invoices.payments import on_settlement_change
from metering.settlements.service import recheck_pending
from tests.chain.fixtures import BASE_USDC
from tests.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.slow

FAR_FUTURE_US = 10**13  # "every scheduled check is due" when added to now


@pytest.fixture
def network(anvil, usdc, pay_to) -> dict[str, Any]:
    return {"rpc_url": anvil.rpc_url, "usdc": usdc.address, "receivers": [pay_to], "rpc_timeout_seconds": 5}


@pytest.fixture
def settings(db_url: str, tmp_path, network) -> Settings:  # type: ignore[no-untyped-def]
    return load_settings(
        environ={},
        database_url=db_url,
        admin_token=ADMIN_TOKEN,
        reports_dir=str(tmp_path / "reports"),
        scheduler={"enabled": False, "settlement_recheck_seconds": 15},
        log_format="json",
        networks={"eip155:8453": network},
    )


@pytest.fixture
def recheck(db, settings):  # type: ignore[no-untyped-def]
    """Run the scheduler's re-check now, as if every scheduled check were due."""

    async def run() -> int:
        return await recheck_pending(db, settings, now_us() + FAR_FUTURE_US, on_change=on_settlement_change)

    return run


def run_purpose(tier: str = "$0.50", run_id: str | None = None, **extra: str) -> dict[str, str]:
    return {"kind": "run", "tier": tier, "run_id": run_id or f"run_{secrets.token_hex(4)}", **extra}


def v2_payload(inner: dict[str, Any], *, asset: str = BASE_USDC, network: str = "eip155:8453") -> dict[str, Any]:
    """Wrap a hand-signed ``{"signature", "authorization"}`` as an x402 v2 PaymentPayload."""
    auth = inner["authorization"]
    return {
        "x402Version": 2,
        "accepted": {
            "scheme": "exact",
            "network": network,
            "asset": asset,
            "amount": auth["value"],
            "payTo": auth["to"],
            "maxTimeoutSeconds": 600,
            "extra": {"name": "USD Coin", "version": "2"},
        },
        "payload": inner,
    }


def random_tx() -> str:
    return "0x" + secrets.token_hex(32)


class FakeRpc:
    """A JSON-RPC endpoint that misbehaves on demand: ``mode`` is "500", "garbage", "slow"
    (answers after 3 s) or "chain:<id>" (answers eth_chainId with another chain only)."""

    def __init__(self) -> None:
        self.mode = "500"
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                if fake.mode == "slow":
                    time.sleep(3)
                    self._send(200, b"{}", "application/json")
                elif fake.mode == "500":
                    self._send(500, b"upstream exploded", "text/plain")
                elif fake.mode == "garbage":
                    self._send(200, b'{"jsonrpc": "2.0", "result": [oops', "application/json")
                else:
                    chain_id = int(fake.mode.split(":", 1)[1])
                    reply = {"jsonrpc": "2.0", "id": body.get("id"), "result": hex(chain_id)}
                    self._send(200, json.dumps(reply).encode(), "application/json")

            def _send(self, code: int, data: bytes, ctype: str) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up waiting ("slow")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True  # closing must not wait for a "slow" reply
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_rpc() -> Iterator[FakeRpc]:
    server = FakeRpc()
    yield server
    server.close()
