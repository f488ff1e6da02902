"""No token, webhook secret or RPC credential ever reaches a log line or an error body.

The real server runs with every kind of secret configured, the scheduler on, and an RPC URL
that carries credentials but cannot be reached; then it is used, wrongly and rightly.
"""

import json
import secrets
import time

import httpx
import pytest
from eth_account import Account

from tests.chain.fixtures import sign_payment
from tests.conftest import ADMIN_TOKEN
from tests.factories import BATCH, event
from tests.process import ServerProcess, free_port

pytestmark = pytest.mark.slow
WEBHOOK_SECRET = "whsec_" + secrets.token_hex(16)
RPC_KEY = "rpckey" + secrets.token_hex(8)
RPC_PASSWORD = "rpcpw" + secrets.token_hex(8)


@pytest.fixture
def server(db_url, db, tmp_path):
    closed = free_port()
    pay_to = Account.create().address
    network = {"rpc_url": f"http://user:{RPC_PASSWORD}@127.0.0.1:{closed}/v2/{RPC_KEY}?apikey={RPC_KEY}",
               "usdc": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "receivers": [pay_to],
               "rpc_timeout_seconds": 2}
    proc = ServerProcess({
        "METERING_DATABASE_URL": db_url, "METERING_ADMIN_TOKEN": ADMIN_TOKEN,
        "METERING_REPORTS_DIR": str(tmp_path / "reports"),
        "METERING_SCHEDULER__ENABLED": "true", "METERING_SCHEDULER__SETTLEMENT_RECHECK_SECONDS": "1",
        "METERING_SCHEDULER__WEBHOOK_INTERVAL_SECONDS": "1", "METERING_SCHEDULER__BILLING_INTERVAL_SECONDS": "1",
        "METERING_NETWORKS": json.dumps({"eip155:8453": network}),
        "METERING_WEBHOOKS": json.dumps([{"url": f"http://127.0.0.1:{free_port()}/hook",
                                          "secret_env": "HOOK_SECRET"}]),
        "HOOK_SECRET": WEBHOOK_SECRET,
    }, tmp_path / "server.log").start()
    proc.pay_to = pay_to
    yield proc
    proc.stop()


def test_secrets_stay_out_of_logs_and_errors(server):
    url, admin = server.url, {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    bodies = []

    def call(method: str, path: str, **kw) -> httpx.Response:
        resp = httpx.request(method, f"{url}{path}", timeout=20, **kw)
        bodies.append(resp.text)
        return resp

    made = httpx.post(f"{url}/v1/tokens", json={"name": "all", "scopes": ["admin"]}, headers=admin).json()
    token = made["token"]  # shown once, in this answer only
    auth = {"Authorization": f"Bearer {token}"}
    # Wrong and almost-right credentials.
    call("GET", "/v1/invoices", headers={"Authorization": f"Bearer {token[:-1]}0"})
    call("GET", "/v1/invoices", headers={"Authorization": f"Bearer {ADMIN_TOKEN}x"})
    call("GET", "/v1/invoices", headers={"Authorization": token})
    # Work that reaches the webhooks (a finalized invoice) and the RPC (a settlement).
    evs = [event("sandbox.running", "2026-01-10T10:00:00Z"), event("sandbox.stopped", "2026-01-10T11:00:00Z")]
    assert call("POST", "/v1/events", json=evs, headers={**auth, **BATCH}).status_code == 202
    run = {"period_start": "2026-01-01T00:00:00Z", "period_end": "2026-02-01T00:00:00Z"}
    assert call("POST", "/v1/billing-runs", json=run, headers=auth).status_code == 201
    payload, _ = sign_payment(Account.create(), server.pay_to, 500_000)
    resp = call("POST", "/v1/settlements", headers=auth, json={
        "network": "eip155:8453", "transaction": "0x" + "ab" * 32, "payment_payload": payload,
        "purpose": {"kind": "run", "run_id": "run_1", "tier": "$0.50"}})
    assert resp.status_code == 202, resp.text
    settlement = resp.json()["id"]
    time.sleep(3)  # a few scheduler ticks: RPC re-checks and webhook deliveries fail and are logged
    got = call("GET", f"/v1/settlements/{settlement}", headers=auth).json()
    assert got["status"] == "pending" and got["last_error"]
    server.stop()

    logs = server.logs()
    assert "webhook" in logs.lower() or "deliver" in logs.lower()
    for secret in (ADMIN_TOKEN, token, token[7:], WEBHOOK_SECRET, RPC_KEY, RPC_PASSWORD):
        assert secret not in logs, secret
        assert all(secret not in body for body in bodies), secret
