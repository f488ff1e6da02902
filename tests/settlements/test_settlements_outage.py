"""An RPC that is down or misbehaves decides nothing, and its URL (with its key) never leaks."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from metering.settlements.models import Settlement
from tests.chain.anvil import free_port
from tests.chain.fixtures import settle_on_chain, sign_payment
from tests.settlements.conftest import random_tx, run_purpose

pytestmark = pytest.mark.slow

SECRET = "SECRETKEY123"


@pytest.fixture
async def writer(make_token):
    return await make_token("settlements:write", "settlements:read")


async def stored(db, sid: str) -> Settlement:
    async with db.read() as session:
        return (await session.execute(select(Settlement).where(Settlement.id == sid))).scalar_one()


async def test_outage_keeps_pending_then_confirms_after_restart(
    client, writer, db, recheck, w3, anvil, usdc, payer, pay_to, facilitator
):
    payload, _ = sign_payment(payer, pay_to, 500_000)
    tx = settle_on_chain(w3, usdc.address, payload, facilitator)
    anvil.mine(40)  # final already: only the outage stands in the way
    anvil.stop()
    try:
        resp = await client.post("/v1/settlements", headers=writer,
                                 json={"transaction": tx, "payment_payload": payload, "purpose": run_purpose()})
        assert resp.status_code == 202, resp.text
        body = resp.json()
        assert body["status"] == "pending" and body["reason"] is None
        assert body["last_error"] and anvil.rpc_url not in body["last_error"]
        first = await stored(db, body["id"])
        assert first.attempts == 1 and first.next_check_at is not None

        await recheck()
        await recheck()
        row = await stored(db, body["id"])
        assert row.status == "pending" and row.attempts == 3 and row.last_error
        # Backoff: each failed check waits longer for the next.
        assert row.next_check_at - row.updated_at > first.next_check_at - first.updated_at
    finally:
        anvil.start()
    await recheck()
    got = (await client.get(f"/v1/settlements/{body['id']}", headers=writer)).json()
    assert got["status"] == "confirmed" and got["last_error"] is None


class TestSecretRpcUrl:
    @pytest.fixture
    def network(self, usdc, pay_to):
        return {"rpc_url": f"http://127.0.0.1:{free_port()}/v2/{SECRET}?key={SECRET}", "usdc": usdc.address,
                "receivers": [pay_to], "rpc_timeout_seconds": 2}

    async def test_closed_port_error_hides_the_url(self, client, writer, db, recheck, payer, pay_to, caplog):
        payload, _ = sign_payment(payer, pay_to, 500_000)
        caplog.set_level(logging.DEBUG)
        with capture_logs() as logs:
            resp = await client.post("/v1/settlements", headers=writer,
                                     json={"transaction": random_tx(), "payment_payload": payload,
                                           "purpose": run_purpose()})
            await recheck()
        assert resp.status_code == 202 and resp.json()["status"] == "pending"
        assert resp.json()["last_error"]
        listed = await client.get("/v1/settlements", headers=writer)
        row = await stored(db, resp.json()["id"])
        assert any(entry.get("last_error") for entry in logs)  # the error path was logged
        for text in (resp.text, listed.text, row.last_error, repr(logs), caplog.text):
            assert SECRET not in text


class TestMisbehavingRpc:
    @pytest.fixture
    def network(self, fake_rpc, usdc, pay_to):
        return {"rpc_url": f"http://127.0.0.1:{fake_rpc.port}/v2/{SECRET}", "usdc": usdc.address,
                "receivers": [pay_to], "rpc_timeout_seconds": 1}

    @pytest.mark.parametrize("mode", ["500", "garbage", "slow"])
    async def test_errors_decide_nothing(self, client, writer, db, fake_rpc, payer, pay_to, mode, caplog):
        fake_rpc.mode = mode
        payload, _ = sign_payment(payer, pay_to, 500_000)
        with capture_logs() as logs:
            resp = await client.post("/v1/settlements", headers=writer,
                                     json={"transaction": random_tx(), "payment_payload": payload,
                                           "purpose": run_purpose()})
        assert resp.status_code == 202, resp.text
        body = resp.json()
        assert body["status"] == "pending" and body["reason"] is None and body["last_error"]
        for text in (resp.text, repr(logs), caplog.text):
            assert SECRET not in text and "/v2/" not in text

    async def test_rpc_on_another_chain_is_rejected(self, client, writer, fake_rpc, payer, pay_to):
        fake_rpc.mode = "chain:1"
        payload, _ = sign_payment(payer, pay_to, 500_000)
        resp = await client.post("/v1/settlements", headers=writer,
                                 json={"transaction": random_tx(), "payment_payload": payload,
                                       "purpose": run_purpose()})
        assert resp.status_code == 201
        assert (resp.json()["status"], resp.json()["reason"]) == ("rejected", "chain_id_mismatch")
        # Once the operator points the RPC at the right chain, reporting again re-checks.
        fake_rpc.mode = "500"
        again = await client.post("/v1/settlements", headers=writer,
                                  json={"transaction": resp.json()["transaction"], "payment_payload": payload,
                                        "purpose": resp.json()["purpose"]})
        assert again.status_code == 200 and again.json()["id"] == resp.json()["id"]
        assert again.json()["status"] == "pending"
