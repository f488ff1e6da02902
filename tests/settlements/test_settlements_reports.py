"""What "the same report" is: payload, transaction and purpose.  Anything else is checked
on its own, offline and on chain, with its own values; and networks can be switched off."""

from __future__ import annotations

import pytest
from eth_account import Account

from metering.settings import load_settings
from metering.settlements.networks import network_for
from metering.settlements.service import confirmed_credit_total
from tests.chain.fixtures import settle_on_chain, sign_authorization, sign_payment
from tests.settlements.conftest import v2_payload

pytestmark = pytest.mark.slow

BASE = "eip155:8453"


async def post(client, auth, **body):
    return await client.post("/v1/settlements", json=body, headers=auth)


async def test_a_changed_payload_on_the_first_payments_transaction_is_not_confirmed(
    client, make_token, settings, db, w3, anvil, usdc, payer, pay_to, facilitator
):
    """The false confirmation of issue 17: rejected as network_not_configured, the network
    is added, then a payload with the same payer and nonce but another amount and receiver
    (validly signed, never mined) is reported with the first payment's transaction."""
    writer = await make_token("settlements:write", "settlements:read")
    other_receiver = Account.create().address
    base = settings.networks.pop(BASE)
    base.receivers = [pay_to, other_receiver]
    credit = {"kind": "credit", "workspace_id": "ws_false"}

    first, _ = sign_payment(payer, pay_to, 500_000)
    tx = settle_on_chain(w3, usdc.address, first, facilitator)
    anvil.mine(32)
    resp = await post(client, writer, transaction=tx, payment_payload=first, purpose=credit)
    assert (resp.status_code, resp.json()["status"], resp.json()["reason"]) == (
        201, "rejected", "network_not_configured")
    rejected_id = resp.json()["id"]

    settings.networks[BASE] = base  # the operator adds the network
    auth = first["payload"]["authorization"]
    forged = sign_authorization(payer, usdc.address, other_receiver, 2_000_000,
                                valid_before=int(auth["validBefore"]), nonce=auth["nonce"])
    resp = await post(client, writer, transaction=tx, payment_payload=v2_payload(forged), purpose=credit)
    body = resp.json()
    assert resp.status_code == 201, resp.text
    assert body["id"] != rejected_id  # not the earlier report: a report of its own
    assert (body["status"], body["reason"]) == ("rejected", "transfer_mismatch")
    assert (body["amount"], body["pay_to"]) == ("2.000000", other_receiver.lower())
    assert usdc.balance_of(other_receiver) == 0
    async with db.read() as session:
        assert await confirmed_credit_total(session, "ws_false") == 0

    # The first payload itself, reported again, is re-checked now that the network exists.
    resp = await post(client, writer, transaction=tx, payment_payload=first, purpose=credit)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["id"], resp.json()["status"], resp.json()["amount"]) == (rejected_id, "confirmed", "0.500000")
    async with db.read() as session:
        assert await confirmed_credit_total(session, "ws_false") == 500_000


async def test_a_corrected_payload_after_a_rejection_is_checked_not_answered_with_the_rejection(
    client, make_token, w3, usdc, payer, pay_to, facilitator
):
    writer = await make_token("settlements:write", "settlements:read")
    paid, _ = sign_payment(payer, pay_to, 500_000)
    tx = settle_on_chain(w3, usdc.address, paid, facilitator)
    purpose = {"kind": "credit", "workspace_id": "ws_fix"}
    broken = v2_payload({**paid["payload"], "signature": "0x" + "11" * 65})
    resp = await post(client, writer, transaction=tx, payment_payload=broken, purpose=purpose)
    assert (resp.status_code, resp.json()["reason"]) == (201, "invalid_signature")

    resp = await post(client, writer, transaction=tx, payment_payload=paid, purpose=purpose)
    assert resp.status_code == 202, resp.text  # stored anew, and pending: mined, not yet safe
    assert (resp.json()["status"], resp.json()["reason"]) == ("pending", None)
    # Now a live settlement holds the payment: another report of it is a conflict.
    again = await post(client, writer, transaction=tx, payment_payload=broken, purpose=purpose)
    assert again.status_code == 409


async def test_a_switched_off_network_rejects_until_switched_on(
    client, make_token, settings, w3, anvil, usdc, payer, pay_to, facilitator
):
    writer = await make_token("settlements:write", "settlements:read")
    settings.networks[BASE].enabled = False
    payload, _ = sign_payment(payer, pay_to, 500_000)
    tx = settle_on_chain(w3, usdc.address, payload, facilitator)
    anvil.mine(32)
    purpose = {"kind": "credit", "workspace_id": "ws_off"}
    resp = await post(client, writer, transaction=tx, payment_payload=payload, purpose=purpose)
    assert (resp.status_code, resp.json()["reason"]) == (201, "network_not_configured")

    settings.networks[BASE].enabled = True
    resp = await post(client, writer, transaction=tx, payment_payload=payload, purpose=purpose)
    assert (resp.status_code, resp.json()["status"]) == (200, "confirmed")


def test_default_networks_can_be_switched_off_in_the_settings_file(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text('[networks."eip155:84532"]\nenabled = false\n')
    settings = load_settings(path, environ={})
    assert network_for(settings, "eip155:84532") is None
    assert network_for(settings, "base-sepolia") is None
    base = network_for(settings, "eip155:8453")  # the other default is untouched
    assert base is not None and base.usdc == "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"

    off = load_settings(environ={"METERING_CONFIG": str(path)}, networks={BASE: {"enabled": False}})
    assert network_for(off, BASE) is None and network_for(off, "eip155:84532") is None
    by_env = load_settings(environ={"METERING_NETWORKS__EIP155:8453__ENABLED": "false"})
    assert network_for(by_env, BASE) is None and network_for(by_env, "eip155:84532") is not None
