"""Proves the local-EVM test infrastructure (anvil + Circle's USDC + x402 SDK signing)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from eth_account import Account
from web3.exceptions import ContractLogicError

from tests.chain import anvil as anvil_mod
from tests.chain.fixtures import (
    AUTHORIZATION_USED_TOPIC,
    BASE_USDC,
    TRANSFER_TOPIC,
    inner_payload,
    settle_on_chain,
    sign_authorization,
    sign_payment,
)

pytestmark = pytest.mark.slow


def _topic_addr(addr: str) -> str:
    return "0x" + "0" * 24 + addr[2:].lower()


def _usdc_logs(receipt, address: str):
    return [lg for lg in receipt["logs"] if lg["address"].lower() == address.lower()]


def test_anvil_missing_gives_npm_ci_hint(monkeypatch, tmp_path):
    monkeypatch.delenv("ANVIL_BIN", raising=False)
    monkeypatch.setattr(anvil_mod, "ANVIL_BIN", Path(tmp_path) / "nope" / "anvil")
    with pytest.raises(anvil_mod.AnvilNotInstalled, match="npm install"):
        anvil_mod.find_anvil()


def test_canonical_usdc_identity(w3, usdc):
    c = usdc.contract.functions
    assert usdc.address == BASE_USDC
    assert c.name().call() == "USD Coin"
    assert c.version().call() == "2"
    assert c.decimals().call() == 6
    assert c.symbol().call() == "USDC"
    assert w3.eth.chain_id == 8453
    # the domain separator is the one x402 / Base USDC use for this address
    from x402.mechanisms.evm import hash_domain
    from x402.mechanisms.evm.types import TypedDataDomain

    expected = hash_domain(
        TypedDataDomain(name="USD Coin", version="2", chain_id=8453, verifying_contract=BASE_USDC)
    )
    assert bytes(c.DOMAIN_SEPARATOR().call()) == bytes(expected)


def test_sdk_signed_v2_payment_settles_with_logs(w3, usdc, payer, pay_to, facilitator):
    payload, header = sign_payment(payer, pay_to, 500_000)
    assert payload["x402Version"] == 2
    assert payload["accepted"]["network"] == "eip155:8453"
    assert payload["accepted"]["asset"] == BASE_USDC
    assert payload["accepted"]["amount"] == "500000"
    auth = payload["payload"]["authorization"]
    assert auth["validAfter"] == "0" and auth["value"] == "500000"
    assert inner_payload(header) == payload["payload"]  # header round-trips

    before = usdc.balance_of(pay_to)
    tx = settle_on_chain(w3, usdc.address, payload, facilitator)
    assert tx.startswith("0x") and len(tx) == 66
    receipt = w3.eth.get_transaction_receipt(tx)
    assert receipt["status"] == 1
    logs = _usdc_logs(receipt, BASE_USDC)
    assert [lg["topics"][0].to_0x_hex() for lg in logs] == [AUTHORIZATION_USED_TOPIC, TRANSFER_TOPIC]
    used, transfer = logs
    assert used["topics"][1].to_0x_hex() == _topic_addr(payer.address)
    assert used["topics"][2].to_0x_hex() == auth["nonce"]
    assert transfer["topics"][1].to_0x_hex() == _topic_addr(payer.address)
    assert transfer["topics"][2].to_0x_hex() == _topic_addr(pay_to)
    assert int.from_bytes(transfer["data"], "big") == 500_000
    assert transfer["logIndex"] == used["logIndex"] + 1
    assert usdc.balance_of(pay_to) == before + 500_000
    assert usdc.authorization_state(payer.address, auth["nonce"]) is True


def test_sdk_signed_v1_payment_settles_via_bytes_overload(w3, usdc, payer, pay_to, facilitator):
    payload, header = sign_payment(payer, pay_to, 2_500_000, network="base", version=1)
    assert payload["x402Version"] == 1 and payload["network"] == "base"
    assert payload["scheme"] == "exact"
    # v1 SDK signs validAfter = now - 600 (v2 signs "0")
    assert int(payload["payload"]["authorization"]["validAfter"]) > 0
    tx = settle_on_chain(w3, usdc.address, header, facilitator.address, use_bytes_signature=True)
    receipt = w3.eth.get_transaction_receipt(tx)
    assert receipt["status"] == 1
    assert [lg["topics"][0].to_0x_hex() for lg in _usdc_logs(receipt, BASE_USDC)] == [
        AUTHORIZATION_USED_TOPIC,
        TRANSFER_TOPIC,
    ]


def test_replay_reverts(w3, usdc, payer, pay_to, facilitator):
    payload, _ = sign_payment(payer, pay_to, 100_000)
    settle_on_chain(w3, usdc.address, payload, facilitator)
    # estimated: rejected before broadcast, with Circle's revert string
    with pytest.raises(ContractLogicError, match="authorization is used or canceled"):
        settle_on_chain(w3, usdc.address, payload, facilitator)
    # forced broadcast: a mined, failed transaction with no logs
    tx = settle_on_chain(w3, usdc.address, payload, facilitator, gas=200_000)
    receipt = w3.eth.get_transaction_receipt(tx)
    assert receipt["status"] == 0 and receipt["logs"] == []


def test_time_bounds_and_bad_signatures(w3, usdc, lookalike_usdc, payer, pay_to, facilitator):
    now = w3.eth.get_block("latest")["timestamp"]
    early = sign_authorization(payer, usdc.address, pay_to, 1, valid_after=now + 3600)
    with pytest.raises(ContractLogicError, match="authorization is not yet valid"):
        settle_on_chain(w3, usdc.address, early, facilitator)
    late = sign_authorization(payer, usdc.address, pay_to, 1, valid_before=now - 1)
    with pytest.raises(ContractLogicError, match="authorization is expired"):
        settle_on_chain(w3, usdc.address, late, facilitator)
    wrong_name = sign_authorization(payer, usdc.address, pay_to, 1, name="USDC")
    with pytest.raises(ContractLogicError, match="invalid signature"):
        settle_on_chain(w3, usdc.address, wrong_name, facilitator)
    # signed for the canonical address, submitted to the look-alike: domain differs
    payload, _ = sign_payment(payer, pay_to, 1_000)
    with pytest.raises(ContractLogicError, match="invalid signature"):
        settle_on_chain(w3, lookalike_usdc.address, payload, facilitator)
    # signed for the look-alike (same name/version), it settles - but the logs
    # come from the look-alike's address, not BASE_USDC
    fake, _ = sign_payment(payer, pay_to, 1_000, asset=lookalike_usdc.address)
    tx = settle_on_chain(w3, lookalike_usdc.address, fake, facilitator)
    receipt = w3.eth.get_transaction_receipt(tx)
    assert receipt["status"] == 1
    assert _usdc_logs(receipt, BASE_USDC) == []
    assert len(_usdc_logs(receipt, lookalike_usdc.address)) == 2


def test_validity_bounds_are_strict(w3, anvil, usdc, payer, pay_to, facilitator, chain_snapshot):
    t = w3.eth.get_block("latest")["timestamp"] + 10
    # block.timestamp == validAfter -> fails; == validBefore -> fails
    for kwargs in ({"valid_after": t}, {"valid_before": t}):
        auth = sign_authorization(payer, usdc.address, pay_to, 1, **kwargs)
        anvil.set_next_block_timestamp(t)
        tx = settle_on_chain(w3, usdc.address, auth, facilitator, gas=200_000)
        assert w3.eth.get_transaction_receipt(tx)["status"] == 0
        t += 10
    # one second inside each bound -> succeeds
    auth = sign_authorization(payer, usdc.address, pay_to, 1, valid_after=t - 1, valid_before=t + 1)
    anvil.set_next_block_timestamp(t)
    tx = settle_on_chain(w3, usdc.address, auth, facilitator, gas=200_000)
    assert w3.eth.get_transaction_receipt(tx)["status"] == 1


def test_safe_and_finalized_lag(w3, anvil):
    anvil.mine(70)
    head = w3.eth.get_block("latest")["number"]
    safe = w3.eth.get_block("safe")["number"]
    finalized = w3.eth.get_block("finalized")["number"]
    assert head - safe == 32
    assert head - finalized == 64
    anvil.mine(1)
    assert w3.eth.get_block("safe")["number"] == safe + 1


def test_a_reorg_after_a_long_history_keeps_contract_code(tmp_path):
    """A full two-engine run mines ~1000 blocks.  anvil then keeps only a few recent states in
    memory and, without --max-persisted-states 0, rebuilt a 33-block reorg on a state read back
    from its disk cache with no contract code: USDC vanished and a rebroadcast payment was mined
    with status 1 and no logs.  A fresh anvil (same command line) shows it in two seconds."""
    node = anvil_mod.Anvil(chain_id=8453, state_dir=tmp_path)
    with node:
        code = "0x6001600055"
        node.rpc("anvil_setCode", BASE_USDC, code)
        node.mine(1000)
        node.reorg(33)
        assert node.rpc("eth_getCode", BASE_USDC, "latest") == code


def test_stop_start_keeps_state(w3, anvil, usdc, payer, pay_to, facilitator):
    payload, _ = sign_payment(payer, pay_to, 123_456)
    tx = settle_on_chain(w3, usdc.address, payload, facilitator)
    receipt = w3.eth.get_transaction_receipt(tx)
    head = w3.eth.get_block("latest")
    balance = usdc.balance_of(pay_to)
    url, starts = anvil.rpc_url, anvil.starts

    anvil.stop()
    assert not anvil.running
    with pytest.raises(Exception):  # the outage: connection refused
        w3.eth.block_number
    t0 = time.monotonic()
    anvil.start()
    restart_s = time.monotonic() - t0
    assert anvil.rpc_url == url and anvil.starts == starts + 1
    assert restart_s < 10

    # the same web3 object keeps working; blocks, receipts and state survived
    assert w3.eth.block_number == head["number"]
    assert w3.eth.get_block("latest")["hash"] == head["hash"]
    again = w3.eth.get_transaction_receipt(tx)
    assert again["blockHash"] == receipt["blockHash"] and again["status"] == 1
    assert len(again["logs"]) == 2
    assert usdc.balance_of(pay_to) == balance
    assert usdc.authorization_state(payer.address, payload["payload"]["authorization"]["nonce"])
    assert usdc.contract.functions.name().call() == "USD Coin"
    # historical state is available too (--preserve-historical-states)
    assert usdc.contract.functions.balanceOf(pay_to).call(
        block_identifier=receipt["blockNumber"] - 1
    ) == balance - 123_456
    # and the chain moves on
    payload2, _ = sign_payment(payer, pay_to, 1)
    tx2 = settle_on_chain(w3, usdc.address, payload2, facilitator)
    r2 = w3.eth.get_transaction_receipt(tx2)
    assert r2["status"] == 1 and r2["blockNumber"] == head["number"] + 1
    assert w3.eth.get_block(r2["blockNumber"])["timestamp"] >= head["timestamp"]
