"""Smart-wallet payers: an EIP-1271 wallet contract paying through USDC's
transferWithAuthorization (FiatTokenV2_2 checks it with isValidSignature), deployed or,
with an ERC-6492 signature, deployed by the facilitator in the settling block."""

from __future__ import annotations

import secrets

import pytest
from eth_account import Account

from tests.chain.fixtures import erc6492_wrap, settle_on_chain, sign_authorization
from tests.settlements.conftest import random_tx, run_purpose, v2_payload

pytestmark = pytest.mark.slow


async def post(client, auth, **body):
    return await client.post("/v1/settlements", json=body, headers=auth)


def wallet_payment(owner, wallet, usdc, pay_to, value, valid_before):
    """The wallet's authorization, signed by its owner (what isValidSignature checks)."""
    return sign_authorization(owner, usdc.address, pay_to, value, valid_before=valid_before, from_address=wallet)


async def test_a_deployed_eip1271_wallet_pays_and_is_confirmed(
    client, make_token, recheck, w3, anvil, usdc, wallet_factory, pay_to, facilitator, deployer
):
    writer = await make_token("settlements:write", "settlements:read")
    owner, salt = Account.create(), secrets.token_bytes(32)
    wallet = wallet_factory.address_of(owner.address, salt)
    wallet_factory.deploy(owner.address, salt, deployer)
    assert w3.eth.get_code(wallet)
    usdc.mint(wallet, 5_000_000)
    valid_before = w3.eth.get_block("latest")["timestamp"] + 600

    inner = wallet_payment(owner, wallet, usdc, pay_to, 500_000, valid_before)
    tx = settle_on_chain(w3, usdc.address, inner, facilitator)  # USDC asks the wallet: valid
    assert usdc.balance_of(pay_to) >= 500_000
    resp = await post(client, writer, transaction=tx, payment_payload=v2_payload(inner), purpose=run_purpose())
    assert resp.status_code == 202, resp.text
    assert (resp.json()["status"], resp.json()["payer"]) == ("pending", wallet.lower())
    anvil.mine(32)
    await recheck()
    got = (await client.get(f"/v1/settlements/{resp.json()['id']}", headers=writer)).json()
    assert got["status"] == "confirmed"

    # Signed by someone who does not own the wallet: its isValidSignature says no.
    stranger = Account.create()
    forged = wallet_payment(stranger, wallet, usdc, pay_to, 500_000, valid_before)
    resp = await post(client, writer, transaction=random_tx(), payment_payload=v2_payload(forged),
                      purpose=run_purpose())
    assert (resp.status_code, resp.json()["status"], resp.json()["reason"]) == (201, "rejected", "invalid_signature")


async def test_an_undeployed_wallet_with_an_erc6492_signature_is_settled_once_deployed(
    client, make_token, recheck, w3, anvil, usdc, wallet_factory, pay_to, facilitator, chain_snapshot
):
    writer = await make_token("settlements:write", "settlements:read")
    owner, salt = Account.create(), secrets.token_bytes(32)
    wallet = wallet_factory.address_of(owner.address, salt)
    usdc.mint(wallet, 5_000_000)  # funds at the counterfactual address
    valid_before = w3.eth.get_block("latest")["timestamp"] + 600
    inner = wallet_payment(owner, wallet, usdc, pay_to, 1_000_000, valid_before)
    wrapped = {**inner, "signature": erc6492_wrap(
        wallet_factory.address, wallet_factory.deploy_call(owner.address, salt), inner["signature"])}

    # The facilitator deploys the wallet and settles in one block; reported before it is mined.
    anvil.set_automine(False)
    try:
        wallet_factory.deploy(owner.address, salt, facilitator, wait=False)
        tx = settle_on_chain(w3, usdc.address, inner, facilitator, use_bytes_signature=True, gas=300_000, wait=False)
        assert not w3.eth.get_code(wallet)
        resp = await post(client, writer, transaction=tx, payment_payload=v2_payload(wrapped),
                          purpose=run_purpose("$1.00"))
        assert resp.status_code == 202, resp.text
        assert (resp.json()["status"], resp.json()["reason"]) == ("pending", None)
    finally:
        anvil.set_automine(True)
    anvil.mine(1)
    assert w3.eth.get_transaction_receipt(tx)["status"] == 1 and w3.eth.get_code(wallet)
    anvil.mine(32)
    await recheck()
    got = (await client.get(f"/v1/settlements/{resp.json()['id']}", headers=writer)).json()
    assert (got["status"], got["amount"], got["payer"]) == ("confirmed", "1.000000", wallet.lower())

    # A wrapper that names no factory, for a wallet with no code: nothing can make it valid.
    other = wallet_factory.address_of(owner.address, secrets.token_bytes(32))
    lone = wallet_payment(owner, other, usdc, pay_to, 1_000_000, valid_before)
    lone["signature"] = erc6492_wrap("0x" + "00" * 20, b"", lone["signature"])
    resp = await post(client, writer, transaction=random_tx(), payment_payload=v2_payload(lone),
                      purpose=run_purpose("$1.00"))
    assert (resp.status_code, resp.json()["reason"]) == (201, "invalid_signature")


class TestRpcFailureWhileVerifying:
    @pytest.fixture
    def network(self, fake_rpc, usdc, pay_to):
        return {"rpc_url": f"http://127.0.0.1:{fake_rpc.port}/key/s3cret", "usdc": usdc.address,
                "receivers": [pay_to], "rpc_timeout_seconds": 2}

    async def test_a_wallet_signature_is_not_rejected_when_the_rpc_fails(
        self, client, make_token, w3, usdc, wallet_factory, pay_to
    ):
        writer = await make_token("settlements:write", "settlements:read")
        owner = Account.create()
        wallet = wallet_factory.address_of(owner.address, secrets.token_bytes(32))
        valid_before = w3.eth.get_block("latest")["timestamp"] + 600
        inner = wallet_payment(owner, wallet, usdc, pay_to, 500_000, valid_before)
        resp = await post(client, writer, transaction=random_tx(), payment_payload=v2_payload(inner),
                          purpose=run_purpose())
        assert resp.status_code == 202, resp.text
        body = resp.json()
        assert (body["status"], body["reason"]) == ("pending", None)
        assert body["last_error"] and "s3cret" not in body["last_error"]
