"""Payments signed by the x402 SDK, settled on anvil, reported through the API."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from metering.settlements.service import confirmed_amount_for_invoice, confirmed_credit_total
from tests.chain.fixtures import BASE_USDC, settle_on_chain, sign_authorization, sign_payment
from tests.factories import event
from tests.settlements.conftest import random_tx, run_purpose, v2_payload

pytestmark = pytest.mark.slow

CONTRACT_FIELDS = {
    "id", "status", "reason", "network", "transaction", "block_number", "payer", "pay_to", "amount",
    "nonce", "purpose", "created_at", "confirmed_at",
}


@pytest.fixture
async def writer(make_token):
    return await make_token("settlements:write", "settlements:read")


async def post(client, auth, **body):
    return await client.post("/v1/settlements", json=body, headers=auth)


async def test_valid_payment_is_pending_then_confirmed_once_safe(
    client, writer, recheck, w3, anvil, usdc, payer, pay_to, facilitator
):
    payload, _ = sign_payment(payer, pay_to, 500_000)
    tx = settle_on_chain(w3, usdc.address, payload, facilitator)
    mined_in = w3.eth.get_transaction_receipt(tx)["blockNumber"]

    resp = await post(client, writer, network="eip155:8453", transaction=tx, payment_payload=payload,
                      purpose=run_purpose("$0.50", "run_1", workspace_id="ws_1"))
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert CONTRACT_FIELDS <= set(body)
    assert body["status"] == "pending" and body["reason"] is None
    assert body["id"].startswith("stl_")
    assert body["transaction"] == tx.lower() and body["block_number"] == mined_in
    assert body["payer"] == payer.address.lower() and body["pay_to"] == pay_to.lower()
    assert body["amount"] == "0.500000"
    assert body["nonce"] == payload["payload"]["authorization"]["nonce"].lower()
    assert body["purpose"] == {"kind": "run", "tier": "$0.50", "run_id": "run_1", "workspace_id": "ws_1"}
    assert body["created_at"].endswith("Z") and body["confirmed_at"] is None

    # A receipt is not finality: below `safe` it stays pending, however often it is checked.
    anvil.mine(30)
    assert await recheck() == 1
    got = (await client.get(f"/v1/settlements/{body['id']}", headers=writer)).json()
    assert got["status"] == "pending"

    anvil.mine(2)  # safe = head - 32 reaches the block
    await recheck()
    got = (await client.get(f"/v1/settlements/{body['id']}", headers=writer)).json()
    assert got["status"] == "confirmed" and got["reason"] is None
    assert got["confirmed_at"].endswith("Z") and got["block_number"] == mined_in


async def test_already_final_payment_is_201_confirmed(client, writer, w3, anvil, usdc, payer, pay_to, facilitator):
    payload, _ = sign_payment(payer, pay_to, 1_000_000)
    tx = settle_on_chain(w3, usdc.address, payload, facilitator)
    anvil.mine(40)
    resp = await post(client, writer, transaction=tx, payment_payload=payload, purpose=run_purpose("$1.00"))
    assert resp.status_code == 201, resp.text
    assert resp.json()["status"] == "confirmed" and resp.json()["amount"] == "1.000000"


async def test_wrong_amount_for_the_run_tier_is_rejected(client, writer, payer, pay_to):
    payload, _ = sign_payment(payer, pay_to, 1_000_000)
    resp = await post(client, writer, transaction=random_tx(), payment_payload=payload, purpose=run_purpose("$0.50"))
    assert resp.status_code == 201, resp.text
    assert resp.json()["status"] == "rejected" and resp.json()["reason"] == "amount_mismatch"
    # The rejection is stored and shown.
    got = await client.get(f"/v1/settlements/{resp.json()['id']}", headers=writer)
    assert got.json()["reason"] == "amount_mismatch"
    # A tier the price book does not have is a malformed request.
    resp = await post(client, writer, transaction=random_tx(), payment_payload=payload, purpose=run_purpose("$0.75"))
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "purpose.tier"


async def test_wrong_pay_to_is_rejected(client, writer, w3, usdc, payer, facilitator):
    stranger = "0x" + secrets.token_hex(20)
    payload, _ = sign_payment(payer, stranger, 500_000)
    tx = settle_on_chain(w3, usdc.address, payload, facilitator)
    resp = await post(client, writer, transaction=tx, payment_payload=payload, purpose=run_purpose())
    assert resp.status_code == 201
    assert (resp.json()["status"], resp.json()["reason"]) == ("rejected", "pay_to_not_accepted")


async def test_bad_signature_and_unconfigured_network_are_rejected(client, writer, usdc, payer, pay_to):
    wrong_domain = sign_authorization(payer, usdc.address, pay_to, 500_000, name="USDC")
    resp = await post(client, writer, transaction=random_tx(), payment_payload=v2_payload(wrong_domain),
                      purpose=run_purpose())
    assert (resp.status_code, resp.json()["reason"]) == (201, "invalid_signature")

    on_mainnet = sign_authorization(payer, usdc.address, pay_to, 500_000, chain_id=1)
    resp = await post(client, writer, transaction=random_tx(), purpose=run_purpose(),
                      payment_payload=v2_payload(on_mainnet, network="eip155:1"))
    assert (resp.status_code, resp.json()["reason"]) == (201, "network_not_configured")
    assert resp.json()["network"] == "eip155:1"


async def test_lookalike_token_logs_do_not_count(client, writer, w3, usdc, lookalike_usdc, payer, pay_to, facilitator):
    # The payer signs the same authorization for USDC and for a look-alike (same name,
    # version, events).  Only the look-alike's is settled; the report names USDC.
    nonce = "0x" + secrets.token_hex(32)
    valid_before = w3.eth.get_block("latest")["timestamp"] + 600
    real = sign_authorization(payer, usdc.address, pay_to, 500_000, valid_before=valid_before, nonce=nonce)
    fake = sign_authorization(payer, lookalike_usdc.address, pay_to, 500_000, valid_before=valid_before, nonce=nonce)
    tx = settle_on_chain(w3, lookalike_usdc.address, fake, facilitator)
    assert w3.eth.get_transaction_receipt(tx)["status"] == 1

    resp = await post(client, writer, transaction=tx, payment_payload=v2_payload(real), purpose=run_purpose())
    assert resp.status_code == 201, resp.text
    assert (resp.json()["status"], resp.json()["reason"]) == ("rejected", "logs_missing")

    # Signed for the look-alike outright: its domain is not the configured USDC's.
    payload, _ = sign_payment(payer, pay_to, 500_000, asset=lookalike_usdc.address)
    resp = await post(client, writer, transaction=tx, payment_payload=payload, purpose=run_purpose())
    assert (resp.json()["status"], resp.json()["reason"]) == ("rejected", "asset_mismatch")


async def test_wrong_nonce_is_rejected(client, writer, w3, usdc, payer, pay_to, facilitator):
    reported, _ = sign_payment(payer, pay_to, 500_000)
    other = sign_authorization(payer, usdc.address, pay_to, 500_000)  # same payer, value, receiver
    tx = settle_on_chain(w3, usdc.address, other, facilitator)
    resp = await post(client, writer, transaction=tx, payment_payload=reported, purpose=run_purpose())
    assert resp.status_code == 201
    assert (resp.json()["status"], resp.json()["reason"]) == ("rejected", "nonce_mismatch")


async def test_reverted_transaction_is_rejected_and_a_later_good_one_settles(
    client, writer, w3, usdc, payer, pay_to, facilitator
):
    payload, _ = sign_payment(payer, pay_to, 500_000)
    good = settle_on_chain(w3, usdc.address, payload, facilitator)
    reverted = settle_on_chain(w3, usdc.address, payload, facilitator, gas=200_000)  # replay: status 0
    assert w3.eth.get_transaction_receipt(reverted)["status"] == 0

    purpose = run_purpose()
    resp = await post(client, writer, transaction=reverted, payment_payload=payload, purpose=purpose)
    assert resp.status_code == 201
    assert (resp.json()["status"], resp.json()["reason"]) == ("rejected", "transaction_failed")
    assert resp.json()["block_number"] == w3.eth.get_transaction_receipt(reverted)["blockNumber"]

    # The rejected report settled nothing, so the transaction that did pay can be reported.
    resp = await post(client, writer, transaction=good, payment_payload=payload, purpose=purpose)
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "pending"


async def test_replays(client, writer, w3, usdc, payer, pay_to, facilitator):
    payload, _ = sign_payment(payer, pay_to, 500_000)
    tx = settle_on_chain(w3, usdc.address, payload, facilitator)
    purpose = run_purpose("$0.50", "run_a")
    # Two identical reports racing: one stores, the other gets the same settlement.
    first, second = await asyncio.gather(
        post(client, writer, transaction=tx, payment_payload=payload, purpose=purpose),
        post(client, writer, transaction=tx, payment_payload=payload, purpose=purpose),
    )
    assert sorted((first.status_code, second.status_code)) == [200, 202], (first.text, second.text)
    assert first.json()["id"] == second.json()["id"]

    again = await post(client, writer, transaction=tx, payment_payload=payload, purpose=purpose)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]

    other_purpose = await post(client, writer, transaction=tx, payment_payload=payload,
                               purpose=run_purpose("$0.50", "run_b"))
    assert other_purpose.status_code == 409
    assert other_purpose.headers["content-type"].startswith("application/problem+json")
    other_tx = await post(client, writer, transaction=random_tx(), payment_payload=payload, purpose=purpose)
    assert other_tx.status_code == 409

    listed = (await client.get("/v1/settlements", headers=writer)).json()
    assert [s["id"] for s in listed["items"]] == [first.json()["id"]]


async def test_reorg_after_confirmation_reverses_the_credit(
    client, writer, db, recheck, w3, anvil, usdc, payer, pay_to, facilitator, chain_snapshot
):
    payload, _ = sign_payment(payer, pay_to, 2_000_000)
    tx = settle_on_chain(w3, usdc.address, payload, facilitator)
    resp = await post(client, writer, transaction=tx, payment_payload=payload,
                      purpose={"kind": "credit", "workspace_id": "ws_credit"})
    assert resp.status_code == 202, resp.text
    sid = resp.json()["id"]
    anvil.mine(32)
    await recheck()
    assert (await client.get(f"/v1/settlements/{sid}", headers=writer)).json()["status"] == "confirmed"
    async with db.read() as session:
        assert await confirmed_credit_total(session, "ws_credit") == 2_000_000

    # Replace the last 33 blocks: the settlement's block (32 deep) is among them.
    anvil.reorg(33)
    await recheck()
    got = (await client.get(f"/v1/settlements/{sid}", headers=writer)).json()
    assert (got["status"], got["reason"]) == ("reorged", "block_not_canonical")
    async with db.read() as session:
        assert await confirmed_credit_total(session, "ws_credit") == 0


async def test_confirmed_settlement_on_a_canonical_block_stays_confirmed(
    client, writer, recheck, w3, anvil, usdc, payer, pay_to, facilitator
):
    payload, _ = sign_payment(payer, pay_to, 500_000)
    tx = settle_on_chain(w3, usdc.address, payload, facilitator)
    anvil.mine(32)
    sid = (await post(client, writer, transaction=tx, payment_payload=payload, purpose=run_purpose())).json()["id"]
    anvil.mine(100)  # past `finalized`: watching for reorgs ends
    assert await recheck() == 1
    assert await recheck() == 0
    assert (await client.get(f"/v1/settlements/{sid}", headers=writer)).json()["status"] == "confirmed"


async def test_invoice_payments_add_up_and_pay_the_invoice(
    client, writer, admin, db, recheck, w3, anvil, usdc, payer, pay_to, facilitator
):
    # A real finalized invoice: one hour of giga-max in January, $0.80.
    events = [event("sandbox.running", "2026-01-10T10:00:00Z", workspace_id="ws_pay", template="giga-max"),
              event("sandbox.stopped", "2026-01-10T11:00:00Z", workspace_id="ws_pay")]
    resp = await client.post("/v1/events", json=events,
                             headers={**admin, "Content-Type": "application/cloudevents-batch+json"})
    assert resp.status_code == 202
    run = {"period_start": "2026-01-01T00:00:00Z", "period_end": "2026-02-01T00:00:00Z"}
    assert (await client.post("/v1/billing-runs", json=run, headers=admin)).status_code == 201
    [invoice] = (await client.get("/v1/invoices", headers=admin)).json()["items"]
    assert (invoice["status"], invoice["total"]) == ("finalized", "0.800000")

    for value in (500_000, 300_000):
        payload, _ = sign_payment(payer, pay_to, value)
        tx = settle_on_chain(w3, usdc.address, payload, facilitator)
        resp = await post(client, writer, transaction=tx, payment_payload=payload,
                          purpose={"kind": "invoice", "invoice_id": invoice["id"]})
        assert resp.status_code == 202, resp.text
        assert resp.json()["purpose"]["kind"] == "invoice"
    async with db.read() as session:
        assert await confirmed_amount_for_invoice(session, invoice["id"]) == 0  # pending counts for nothing
    got = (await client.get(f"/v1/invoices/{invoice['id']}", headers=admin)).json()
    assert (got["status"], got["amount_paid"]) == ("finalized", "0.000000")
    anvil.mine(32)
    await recheck()
    got = (await client.get(f"/v1/invoices/{invoice['id']}", headers=admin)).json()
    assert (got["status"], got["amount_paid"], got["amount_due"]) == ("paid", "0.800000", "0.000000")
    # Paying a paid invoice, or one that does not exist, is refused before the chain is asked.
    payload, _ = sign_payment(payer, pay_to, 100_000)
    resp = await post(client, writer, transaction=random_tx(), payment_payload=payload,
                      purpose={"kind": "invoice", "invoice_id": invoice["id"]})
    assert resp.status_code == 409
    resp = await post(client, writer, transaction=random_tx(), payment_payload=payload,
                      purpose={"kind": "invoice", "invoice_id": "inv_missing"})
    assert resp.status_code == 404


async def test_v1_header_and_v1_json(client, writer, w3, usdc, payer, pay_to, facilitator):
    payload, header = sign_payment(payer, pay_to, 1_000_000, network="base", version=1)
    tx = settle_on_chain(w3, usdc.address, header, facilitator.address, use_bytes_signature=True)
    resp = await post(client, writer, transaction=tx, payment_header=header, purpose=run_purpose("$1.00"))
    assert resp.status_code == 202, resp.text
    assert resp.json()["network"] == "eip155:8453" and resp.json()["status"] == "pending"
    # The same payment as the v1 JSON object is the same settlement.
    again = await post(client, writer, network="base", transaction=tx, payment_payload=payload,
                       purpose=resp.json()["purpose"])
    assert again.status_code == 200 and again.json()["id"] == resp.json()["id"]


async def test_v2_header(client, writer, w3, usdc, payer, pay_to, facilitator):
    payload, header = sign_payment(payer, pay_to, 2_000_000)
    tx = settle_on_chain(w3, usdc.address, payload, facilitator)
    resp = await post(client, writer, network="eip155:8453", transaction=tx, payment_header=header,
                      purpose=run_purpose("$2.00"))
    assert resp.status_code == 202, resp.text
    assert resp.json()["amount"] == "2.000000"


async def test_authorization_that_expired_unmined_is_rejected(client, writer, recheck, w3, anvil, usdc, payer, pay_to):
    latest = w3.eth.get_block("latest")["timestamp"]
    already = sign_authorization(payer, usdc.address, pay_to, 500_000, valid_before=latest)
    resp = await post(client, writer, transaction=random_tx(), payment_payload=v2_payload(already),
                      purpose=run_purpose())
    assert (resp.status_code, resp.json()["status"], resp.json()["reason"]) == (201, "rejected", "expired")

    soon = sign_authorization(payer, usdc.address, pay_to, 500_000, valid_before=latest + 3)
    resp = await post(client, writer, transaction=random_tx(), payment_payload=v2_payload(soon),
                      purpose=run_purpose())
    assert (resp.status_code, resp.json()["status"]) == (202, "pending")
    anvil.set_next_block_timestamp(latest + 3)
    anvil.mine(1)
    await recheck()
    got = (await client.get(f"/v1/settlements/{resp.json()['id']}", headers=writer)).json()
    assert (got["status"], got["reason"]) == ("rejected", "expired")


async def test_transfer_to_unlisted_asset_address_in_v2_is_rejected(client, writer, payer, pay_to):
    inner = sign_authorization(payer, BASE_USDC, pay_to, 500_000)
    payload = v2_payload(inner)
    payload["accepted"]["amount"] = "400000"  # the server asked for less than was signed
    resp = await post(client, writer, transaction=random_tx(), payment_payload=payload,
                      purpose={"kind": "credit", "workspace_id": "ws_1"})
    assert (resp.status_code, resp.json()["reason"]) == (201, "amount_mismatch")


class TestConfirmationsFinality:
    @pytest.fixture
    def network(self, anvil, usdc, pay_to):
        return {"rpc_url": anvil.rpc_url, "usdc": usdc.address, "receivers": [pay_to], "finality": 5}

    async def test_confirmed_after_n_confirmations(self, client, writer, recheck, w3, anvil, usdc, payer, pay_to,
                                                   facilitator):
        payload, _ = sign_payment(payer, pay_to, 500_000)
        tx = settle_on_chain(w3, usdc.address, payload, facilitator)
        sid = (await post(client, writer, transaction=tx, payment_payload=payload, purpose=run_purpose())).json()["id"]
        anvil.mine(3)  # 4 confirmations
        await recheck()
        assert (await client.get(f"/v1/settlements/{sid}", headers=writer)).json()["status"] == "pending"
        anvil.mine(1)  # 5
        await recheck()
        assert (await client.get(f"/v1/settlements/{sid}", headers=writer)).json()["status"] == "confirmed"


class TestFinalizedFinality:
    @pytest.fixture
    def network(self, anvil, usdc, pay_to):
        return {"rpc_url": anvil.rpc_url, "usdc": usdc.address, "receivers": [pay_to], "finality": "finalized"}

    async def test_safe_is_not_enough(self, client, writer, db, recheck, w3, anvil, usdc, payer, pay_to, facilitator):
        payload, _ = sign_payment(payer, pay_to, 500_000)
        tx = settle_on_chain(w3, usdc.address, payload, facilitator)
        sid = (await post(client, writer, transaction=tx, payment_payload=payload, purpose=run_purpose())).json()["id"]
        anvil.mine(40)  # past `safe`, not `finalized` (head - 64)
        await recheck()
        assert (await client.get(f"/v1/settlements/{sid}", headers=writer)).json()["status"] == "pending"
        anvil.mine(24)
        await recheck()
        assert (await client.get(f"/v1/settlements/{sid}", headers=writer)).json()["status"] == "confirmed"
        assert await recheck() == 0  # finalized: no reorg watch left


async def test_status_changes_reach_the_on_change_hook(
    db, settings, client, writer, w3, anvil, usdc, payer, pay_to, facilitator, chain_snapshot
):
    from metering.db.base import now_us
    from metering.settlements.service import recheck_pending

    seen = []

    async def on_change(session, settlement):
        seen.append((settlement.id, settlement.status))

    client.app.state["on_settlement_change"] = on_change
    payload, _ = sign_payment(payer, pay_to, 500_000)
    tx = settle_on_chain(w3, usdc.address, payload, facilitator)
    sid = (await post(client, writer, transaction=tx, payment_payload=payload, purpose=run_purpose())).json()["id"]
    anvil.mine(32)
    await recheck_pending(db, settings, now_us() + 10**13, on_change=on_change)
    await recheck_pending(db, settings, now_us() + 10**13, on_change=on_change)  # no change: no call
    anvil.reorg(33)
    await recheck_pending(db, settings, now_us() + 10**13, on_change=on_change)
    assert seen == [(sid, "pending"), (sid, "confirmed"), (sid, "reorged")]
