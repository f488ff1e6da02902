"""Reorgs followed to their end: dropped -> reorged (effect reversed); mined again, at the
same height or later -> confirmed at the new block (effect back); reported again -> the
chain is asked again."""

from __future__ import annotations

import time

import pytest
from eth_account import Account
from web3.exceptions import TransactionNotFound

from metering.settlements.models import Settlement
from metering.settlements.service import confirmed_credit_total
from tests.chain.fixtures import settle_on_chain, sign_payment
from tests.factories import event

pytestmark = pytest.mark.slow


async def post(client, auth, **body):
    return await client.post("/v1/settlements", json=body, headers=auth)


async def get(client, auth, sid):
    return (await client.get(f"/v1/settlements/{sid}", headers=auth)).json()


async def credit(db, workspace_id):
    async with db.read() as session:
        return await confirmed_credit_total(session, workspace_id)


def fresh_relayer(anvil):
    """A facilitator of its own: its nonces were never used on a chain an earlier test
    reverted (anvil's pool was seen to keep such a rebroadcast pending, unmined)."""
    relayer = Account.create()
    anvil.set_balance(relayer.address, 10**20)
    anvil.mine(1)  # the balance is in a block below the ones a reorg replaces
    return relayer


def reorg(anvil, usdc, depth):
    """anvil_reorg, checked: the rebuilt chain still has USDC's code.  (anvil rebuilt deep
    reorgs on a state without contract code once its states went to its disk cache; see
    tests/chain/anvil.py.  A rebroadcast then 'succeeds' with no logs: that is anvil's
    fault, not the service's, and is reported as such.)"""
    anvil.reorg(depth)
    assert anvil.rpc("eth_getCode", usdc.address, "latest") != "0x", "anvil lost USDC's code in anvil_reorg"


def rebroadcast(anvil, raw, tx):
    """Broadcast a signed transaction again; the block it is mined in.

    Its fee was set for the base fee of its first block; after an evm_revert anvil's next
    base fee can be above it (the transaction then waits in the pool), so it is lowered."""
    anvil.rpc("anvil_setNextBlockBaseFeePerGas", "0x1")
    anvil.rpc("eth_sendRawTransaction", raw)
    for _ in range(100):  # automine can answer the send before the receipt is there
        receipt = anvil.rpc("eth_getTransactionReceipt", tx)
        if receipt is not None:
            break
        time.sleep(0.05)
    assert receipt is not None, f"not mined: pool {anvil.rpc('txpool_content')}, head {anvil.block_number()}"
    return int(receipt["blockNumber"], 16)


def chain_state(anvil, w3, payload, tx, got=None):
    """What a failure needs to be understood: the settlement as the API shows it (status,
    reason, last_error), the chain's clock against the authorization's validBefore, and
    the transaction's receipt."""
    head = w3.eth.get_block("latest")
    receipt = anvil.rpc("eth_getTransactionReceipt", tx)
    mined = None if receipt is None else {"block": int(receipt["blockNumber"], 16), "status": receipt["status"]}
    return (f"settlement={got} head={head['number']} head_time={head['timestamp']} "
            f"validBefore={payload['payload']['authorization']['validBefore']} "
            f"wall={int(time.time())} receipt={mined}")


async def finalized_invoice(client, admin, workspace_id):
    """A real finalized invoice of $0.80 (one hour of giga-max in January)."""
    events = [event("sandbox.running", "2026-01-10T10:00:00Z", workspace_id=workspace_id, template="giga-max"),
              event("sandbox.stopped", "2026-01-10T11:00:00Z", workspace_id=workspace_id)]
    resp = await client.post("/v1/events", json=events,
                             headers={**admin, "Content-Type": "application/cloudevents-batch+json"})
    assert resp.status_code == 202
    run = {"period_start": "2026-01-01T00:00:00Z", "period_end": "2026-02-01T00:00:00Z"}
    assert (await client.post("/v1/billing-runs", json=run, headers=admin)).status_code == 201
    [invoice] = (await client.get(f"/v1/invoices?workspace_id={workspace_id}", headers=admin)).json()["items"]
    assert (invoice["status"], invoice["total"]) == ("finalized", "0.800000")
    return invoice["id"]


async def test_mined_again_at_the_same_height_pays_the_invoice_again(
    client, make_token, admin, db, recheck, w3, anvil, usdc, payer, pay_to, facilitator, chain_snapshot
):
    writer = await make_token("settlements:write", "settlements:read")
    invoice_id = await finalized_invoice(client, admin, "ws_reorg_inv")
    relayer = fresh_relayer(anvil)
    before_payment = anvil.snapshot()
    payload, _ = sign_payment(payer, pay_to, 800_000)
    tx = settle_on_chain(w3, usdc.address, payload, relayer)
    raw = anvil.rpc("eth_getRawTransactionByHash", tx)
    resp = await post(client, writer, transaction=tx, payment_payload=payload,
                      purpose={"kind": "invoice", "invoice_id": invoice_id})
    sid, height = resp.json()["id"], resp.json()["block_number"]
    old_block = w3.eth.get_block(height)
    anvil.mine(32)
    await recheck()
    assert (await get(client, writer, sid))["status"] == "confirmed"
    invoice = (await client.get(f"/v1/invoices/{invoice_id}", headers=admin)).json()
    assert invoice["status"] == "paid"

    # The chain from the payment's block on is replaced: a new block at the same height,
    # one second later, carries the same signed transaction, and as many blocks follow.
    # (anvil_reorg with the raw transaction would do the same; in full runs it once
    # re-executed it with no USDC logs: anvil's lost contract code, see tests/chain/anvil.py.)
    anvil.revert(before_payment)
    anvil.set_next_block_timestamp(old_block["timestamp"] + 1)
    assert rebroadcast(anvil, raw, tx) == height
    anvil.mine(32)
    again = w3.eth.get_transaction_receipt(tx)
    assert (again["blockNumber"], again["status"]) == (height, 1)
    new_hash = again["blockHash"].to_0x_hex()
    assert new_hash != old_block["hash"].to_0x_hex()

    await recheck()  # the old block is gone: reorged, the invoice is unpaid again
    got = await get(client, writer, sid)
    assert (got["status"], got["reason"]) == ("reorged", "block_not_canonical")
    invoice = (await client.get(f"/v1/invoices/{invoice_id}", headers=admin)).json()
    assert (invoice["status"], invoice["amount_paid"]) == ("finalized", "0.000000")

    await recheck()  # the transaction is on the canonical chain again, its block safe
    got = await get(client, writer, sid)
    assert (got["status"], got["reason"], got["block_number"]) == ("confirmed", None, height)
    invoice = (await client.get(f"/v1/invoices/{invoice_id}", headers=admin)).json()
    assert (invoice["status"], invoice["amount_paid"]) == ("paid", "0.800000")
    async with db.read() as session:
        assert (await session.get(Settlement, sid)).block_hash == new_hash


async def test_dropped_then_rebroadcast_later_confirms_at_the_new_block(
    client, make_token, db, recheck, w3, anvil, usdc, payer, pay_to, facilitator, chain_snapshot
):
    writer = await make_token("settlements:write", "settlements:read")
    payload, _ = sign_payment(payer, pay_to, 2_000_000)
    tx = settle_on_chain(w3, usdc.address, payload, fresh_relayer(anvil))
    raw = anvil.rpc("eth_getRawTransactionByHash", tx)
    purpose = {"kind": "credit", "workspace_id": "ws_reorg_later"}
    resp = await post(client, writer, transaction=tx, payment_payload=payload, purpose=purpose)
    sid, height = resp.json()["id"], resp.json()["block_number"]
    anvil.mine(32)
    await recheck()
    assert (await get(client, writer, sid))["status"] == "confirmed"
    assert await credit(db, "ws_reorg_later") == 2_000_000

    # The payment's blocks are replaced by others without it (anvil_reorg): dropped.
    reorg(anvil, usdc, 33)
    anvil.mine(8)
    await recheck()
    got = await get(client, writer, sid)
    assert (got["status"], got["reason"]) == ("reorged", "block_not_canonical")
    assert await credit(db, "ws_reorg_later") == 0
    await recheck()  # not on the chain: still reorged, and still watched
    assert (await get(client, writer, sid))["status"] == "reorged"

    # The facilitator broadcasts the same signed transaction again: mined later.
    new_height = rebroadcast(anvil, raw, tx)
    assert new_height > height
    await recheck()  # mined, not yet safe
    got = await get(client, writer, sid)
    assert got["status"] == "reorged", chain_state(anvil, w3, payload, tx, got)
    assert await credit(db, "ws_reorg_later") == 0
    anvil.mine(32)
    # Reporting it again asks the chain again (the scheduler would too).
    resp = await post(client, writer, transaction=tx, payment_payload=payload, purpose=purpose)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["id"], resp.json()["status"], resp.json()["block_number"]) == (sid, "confirmed", new_height)
    assert await credit(db, "ws_reorg_later") == 2_000_000


async def dropped_payment(client, writer, recheck, w3, anvil, usdc, payer, pay_to, workspace_id, amount):
    """A credit payment confirmed, then dropped by a reorg: (settlement id, its signed
    transaction, its hash, the raw transaction)."""
    payload, _ = sign_payment(payer, pay_to, amount)
    tx = settle_on_chain(w3, usdc.address, payload, fresh_relayer(anvil))
    raw = anvil.rpc("eth_getRawTransactionByHash", tx)
    purpose = {"kind": "credit", "workspace_id": workspace_id}
    sid = (await post(client, writer, transaction=tx, payment_payload=payload, purpose=purpose)).json()["id"]
    anvil.mine(32)
    await recheck()
    assert (await get(client, writer, sid))["status"] == "confirmed"
    reorg(anvil, usdc, 33)
    await recheck()
    assert (await get(client, writer, sid))["status"] == "reorged"
    return sid, payload, tx, raw


def failing_rebroadcast(anvil, w3, usdc, raw, tx):
    """The same signed transaction mined again while USDC is paused: status 0."""
    usdc.contract.functions.pause().transact({"from": usdc.minter})  # the minter is also the pauser
    height = rebroadcast(anvil, raw, tx)
    assert w3.eth.get_transaction_receipt(tx)["status"] == 0
    return height


async def test_mined_again_failing_in_a_block_not_yet_final_is_still_followed(
    client, make_token, db, recheck, w3, anvil, usdc, payer, pay_to, facilitator, chain_snapshot
):
    """A failing receipt in a block that is not final is no verdict: that block may be
    replaced too, and the same transaction succeed in its place.  The settlement stays
    reorged (watched) until the chain decides."""
    writer = await make_token("settlements:write", "settlements:read")
    sid, payload, tx, raw = await dropped_payment(
        client, writer, recheck, w3, anvil, usdc, payer, pay_to, "ws_reorg_fail_then_pay", 1_500_000)
    before_failure = anvil.snapshot()
    failing_rebroadcast(anvil, w3, usdc, raw, tx)
    await recheck()  # mined again, failing, in a block not yet safe
    got = await get(client, writer, sid)
    assert (got["status"], got["reason"]) == ("reorged", "block_not_canonical"), chain_state(anvil, w3, payload, tx, got)

    # Another reorg replaces the pause and the failed transaction's block; the same signed
    # transaction is mined again, and pays.
    anvil.revert(before_failure)
    new_height = rebroadcast(anvil, raw, tx)
    assert w3.eth.get_transaction_receipt(tx)["status"] == 1
    anvil.mine(32)
    await recheck()
    got = await get(client, writer, sid)
    assert (got["status"], got["reason"], got["block_number"]) == ("confirmed", None, new_height), got
    assert await credit(db, "ws_reorg_fail_then_pay") == 1_500_000


async def test_mined_again_failing_in_a_final_block_is_rejected(
    client, make_token, db, recheck, w3, anvil, usdc, payer, pay_to, facilitator, chain_snapshot
):
    writer = await make_token("settlements:write", "settlements:read")
    sid, payload, tx, raw = await dropped_payment(
        client, writer, recheck, w3, anvil, usdc, payer, pay_to, "ws_reorg_fail", 1_250_000)
    height = failing_rebroadcast(anvil, w3, usdc, raw, tx)
    await recheck()
    assert (await get(client, writer, sid))["status"] == "reorged"
    anvil.mine(32)  # the failing block is safe now
    await recheck()
    got = await get(client, writer, sid)
    assert (got["status"], got["reason"], got["block_number"]) == ("rejected", "transaction_failed", height), got
    assert await recheck() == 0  # the chain decided: no longer watched
    assert await credit(db, "ws_reorg_fail") == 0


async def test_dropped_for_good_stays_reorged_and_is_no_longer_watched(
    client, make_token, db, recheck, w3, anvil, usdc, payer, pay_to, facilitator, chain_snapshot
):
    writer = await make_token("settlements:write", "settlements:read")
    payload, _ = sign_payment(payer, pay_to, 1_000_000)
    tx = settle_on_chain(w3, usdc.address, payload, facilitator)
    purpose = {"kind": "credit", "workspace_id": "ws_reorg_gone"}
    sid = (await post(client, writer, transaction=tx, payment_payload=payload, purpose=purpose)).json()["id"]
    anvil.mine(32)
    await recheck()
    reorg(anvil, usdc, 33)
    await recheck()
    assert (await get(client, writer, sid))["status"] == "reorged"
    with pytest.raises(TransactionNotFound):
        w3.eth.get_transaction_receipt(tx)

    # Once a block is past validBefore the authorization can never be mined again.
    valid_before = int(payload["payload"]["authorization"]["validBefore"])
    anvil.set_next_block_timestamp(valid_before + 1)
    anvil.mine(1)
    await recheck()
    got = await get(client, writer, sid)
    assert (got["status"], got["reason"]) == ("reorged", "block_not_canonical")
    assert await recheck() == 0  # nothing left to watch
    assert await credit(db, "ws_reorg_gone") == 0
