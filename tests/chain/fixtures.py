"""pytest plugin: a local anvil standing in for Base, USDC at its real address,
and helpers to sign x402 payments (official SDK) and settle them on chain.

Enable with ``pytest_plugins = ["tests.chain.fixtures"]`` in tests/conftest.py.

Fixtures
    anvil            (session)  Anvil: .rpc_url .stop() .start() .restart() .kill() .mine(n)
                                .snapshot() .revert(id) .rpc(method, *params) .w3
    w3               (session)  web3.Web3 (sync HTTPProvider) on anvil.rpc_url
    usdc_artifact    (session)  compiled TestUSDC (abi, bytecode, deployed_bytecode, storage_layout)
    circle_usdc      (session)  compiled Circle USDC: FiatTokenV2_2, FiatTokenProxy, SignatureChecker
    deployer         (session)  LocalAccount, anvil dev key #0 (10k ETH)
    facilitator      (session)  LocalAccount, anvil dev key #1 (10k ETH): submits settlements
    payer            (session)  fresh LocalAccount holding PAYER_FUNDS µUSDC at the canonical USDC
    pay_to           (session)  checksum address that receives payments (fresh key, no funds)
    usdc             (session)  TokenHandle for Circle's real USDC (FiatTokenV2_2 behind FiatTokenProxy,
                                compiled from npm sources with solc 0.6.12) at 0x8335...2913,
                                name "USD Coin", version "2"
    lookalike_usdc   (session)  TokenHandle: the mock TestUSDC, same name/version, at another address
                                (payer funded there too) - for the look-alike cases only
    wallet_factory   (session)  WalletFactory: deploys EIP-1271 OwnerWallets (tests/chain/contracts)
    chain_snapshot   (function) evm_snapshot before the test, evm_revert after (best effort;
                                snapshots do not survive an anvil restart)

Helpers (importable)
    sign_payment(payer, pay_to, value_micro, network="eip155:8453", version=2, ...)
        -> (payment_payload_dict, header_value)
    sign_authorization(payer, token, to, value, valid_after, valid_before, nonce=None, ...)
        -> {"signature", "authorization"}   (no SDK, any validAfter/validBefore)
    settle_on_chain(w3, usdc_address, payload, relayer, ...) -> "0x<tx hash>"
    deploy_wallet_factory(w3, deployer) -> WalletFactory (EIP-1271 OwnerWallets at CREATE2 addresses)
    erc6492_wrap(factory, factory_calldata, signature) -> the ERC-6492 signature of an undeployed wallet
    deploy_test_usdc(w3, deployer, name="USD Coin", version="2") -> TokenHandle
    install_circle_usdc(w3, address=BASE_USDC) -> TokenHandle   (the real FiatTokenV2_2)
    install_token_at(w3, address, name="USD Coin", version="2") -> TokenHandle
    mine(w3, n), snapshot(w3), revert(w3, id)
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from .anvil import (
    DEV_KEYS,
    Anvil,
    AnvilError,
    AnvilNotInstalled,
    make_web3,
    mine,
    revert,
    snapshot,
)
from .compile import compile_contract, compile_usdc, link, storage_slot

__all__ = [
    "BASE_USDC",
    "BASE_SEPOLIA_USDC",
    "TRANSFER_TOPIC",
    "AUTHORIZATION_USED_TOPIC",
    "PAYER_FUNDS",
    "TokenHandle",
    "deploy_test_usdc",
    "install_token_at",
    "install_circle_usdc",
    "WalletFactory",
    "deploy_wallet_factory",
    "erc6492_wrap",
    "sign_payment",
    "sign_authorization",
    "settle_on_chain",
    "split_signature",
    "inner_payload",
    "mine",
    "snapshot",
    "revert",
]

BASE_USDC = to_checksum_address("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913")
BASE_SEPOLIA_USDC = to_checksum_address("0x036CbD53842c5426634e7929541eC2318f3dCF7e")
TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
AUTHORIZATION_USED_TOPIC = "0x" + keccak(text="AuthorizationUsed(address,bytes32)").hex()
assert TRANSFER_TOPIC == "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
assert AUTHORIZATION_USED_TOPIC == "0x98de503528ee59b575ef0c0a2576a82497bfc029a5685b209e9ec333479b10a5"

PAYER_FUNDS = 1_000_000 * 10**6  # 1M USDC in µUSDC
LOOKALIKE_ADDRESS = to_checksum_address("0x" + keccak(text="metering.tests.lookalike-usdc").hex()[-40:])

# CAIP-2 <-> v1 network names, and the USDC domain name per chain
_V1_NAMES = {8453: "base", 84532: "base-sepolia"}
_V1_CHAIN_IDS = {v: k for k, v in _V1_NAMES.items()}
_DEFAULT_TOKEN = {8453: (BASE_USDC, "USD Coin", "2"), 84532: (BASE_SEPOLIA_USDC, "USDC", "2")}

_TWA_VRS = (
    "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
)
_TWA_BYTES = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"


# --------------------------------------------------------------------- tokens


@dataclass
class TokenHandle:
    """A token instance: ``.address``, ``.contract`` (web3 Contract), ``.w3``."""

    w3: Any
    address: str
    contract: Any
    name: str
    version: str
    minter: str = Account.from_key(DEV_KEYS[0]).address  # an unlocked anvil account

    def balance_of(self, who: str) -> int:
        return self.contract.functions.balanceOf(to_checksum_address(who)).call()

    def mint(self, to: str, amount: int) -> str:
        """Mint ``amount`` µUSDC to ``to`` (sent from the token's minter)."""
        tx = self.contract.functions.mint(to_checksum_address(to), amount).transact({"from": self.minter})
        self.w3.eth.wait_for_transaction_receipt(tx, timeout=30)
        return tx.to_0x_hex()

    def authorization_state(self, authorizer: str, nonce: str | bytes) -> bool:
        n = bytes.fromhex(nonce[2:]) if isinstance(nonce, str) else nonce
        return self.contract.functions.authorizationState(to_checksum_address(authorizer), n).call()

    def domain_separator(self) -> str:
        return self.contract.functions.DOMAIN_SEPARATOR().call().to_0x_hex()


def _artifact() -> dict[str, Any]:
    return compile_contract("TestUSDC")


def _send(w3, tx_fn, sender: LocalAccount | str, gas: int | None = None) -> str:
    """Send a contract call from a LocalAccount (signed locally) or an unlocked
    anvil address (eth_sendTransaction). Returns the 0x tx hash (no waiting)."""
    params: dict[str, Any] = {}
    if gas is not None:
        params["gas"] = gas
    if isinstance(sender, str):
        params["from"] = to_checksum_address(sender)
        return tx_fn.transact(params).to_0x_hex()
    params["from"] = sender.address
    params["nonce"] = w3.eth.get_transaction_count(sender.address, "pending")
    params["chainId"] = w3.eth.chain_id
    tx = tx_fn.build_transaction(params)
    signed = sender.sign_transaction(tx)
    return w3.eth.send_raw_transaction(signed.raw_transaction).to_0x_hex()


def deploy_test_usdc(
    w3, deployer: LocalAccount | str, name: str = "USD Coin", version: str = "2"
) -> TokenHandle:
    """Deploy a fresh TestUSDC (constructor sets name/version)."""
    art = _artifact()
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    tx_hash = _send(w3, factory.constructor(name, version), deployer)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    if receipt["status"] != 1:
        raise AnvilError(f"TestUSDC deployment reverted: {tx_hash}")
    address = receipt["contractAddress"]
    return TokenHandle(w3, address, w3.eth.contract(address=address, abi=art["abi"]), name, version)


def _string_slots(slot: int, value: str) -> list[tuple[int, bytes]]:
    """Storage words of a Solidity ``string`` at ``slot`` (short and long layouts)."""
    data = value.encode()
    if len(data) < 32:
        return [(slot, data.ljust(31, b"\0") + bytes([len(data) * 2]))]
    words = [(slot, (len(data) * 2 + 1).to_bytes(32, "big"))]
    base = int.from_bytes(keccak(slot.to_bytes(32, "big")), "big")
    for i in range(0, len(data), 32):
        words.append((base + i // 32, data[i : i + 32].ljust(32, b"\0")))
    return words


def _set_storage(w3, address: str, slot: int, word: bytes) -> None:
    resp = w3.provider.make_request(
        "anvil_setStorageAt", [address, "0x" + slot.to_bytes(32, "big").hex(), "0x" + word.hex()]
    )
    if "error" in resp:
        raise AnvilError(f"anvil_setStorageAt failed: {resp['error']}")


def install_token_at(
    w3, address: str, name: str = "USD Coin", version: str = "2", code: str | bytes | None = None
) -> TokenHandle:
    """Put TestUSDC's runtime code at ``address`` (anvil_setCode) and write its
    name/version/initialized slots (anvil_setStorageAt). No constructor runs, so
    balances start empty (mint as needed). Works because TestUSDC computes its
    EIP-712 domain separator at call time from storage + chainid + address(this).
    ``code`` defaults to the compiled runtime bytecode (e.g. pass
    ``w3.eth.get_code(deployed.address)`` to copy a deployed instance)."""
    art = _artifact()
    address = to_checksum_address(address)
    if code is None:
        code = art["deployed_bytecode"]
    elif isinstance(code, bytes):
        code = "0x" + code.hex()
    resp = w3.provider.make_request("anvil_setCode", [address, code])
    if "error" in resp:
        raise AnvilError(f"anvil_setCode failed: {resp['error']}")
    for slot, word in _string_slots(storage_slot(art, "_name"), name):
        _set_storage(w3, address, slot, word)
    for slot, word in _string_slots(storage_slot(art, "_version"), version):
        _set_storage(w3, address, slot, word)
    _set_storage(w3, address, storage_slot(art, "_initialized"), (1).to_bytes(32, "big"))
    contract = w3.eth.contract(address=address, abi=art["abi"])
    got = (contract.functions.name().call(), contract.functions.version().call())
    if got != (name, version):
        raise AnvilError(f"token at {address} reports {got}, expected {(name, version)}")
    return TokenHandle(w3, address, contract, name, version)


# ZeppelinOS proxy slots of FiatTokenProxy: keccak256("org.zeppelinos.proxy.implementation" / ".admin").
PROXY_IMPLEMENTATION_SLOT = int.from_bytes(keccak(text="org.zeppelinos.proxy.implementation"), "big")
PROXY_ADMIN_SLOT = int.from_bytes(keccak(text="org.zeppelinos.proxy.admin"), "big")
# Roles of the installed USDC (unlocked anvil dev accounts): the proxy admin may not call
# the token through the proxy, so it is an account of its own.
USDC_PROXY_ADMIN = Account.from_key(DEV_KEYS[3]).address
USDC_OWNER = Account.from_key(DEV_KEYS[4]).address  # owner, master minter, pauser, blacklister, minter


def _deploy(w3, abi: list[Any], bytecode: str, *args: Any) -> str:
    tx = w3.eth.contract(abi=abi, bytecode=bytecode).constructor(*args).transact({"from": USDC_PROXY_ADMIN})
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=30)
    if receipt["status"] != 1:
        raise AnvilError(f"deployment reverted: {tx.to_0x_hex()}")
    return receipt["contractAddress"]


def install_circle_usdc(w3, address: str = BASE_USDC, name: str = "USD Coin", symbol: str = "USDC") -> TokenHandle:
    """Circle's USDC as deployed on Base: FiatTokenV2_2 (its SignatureChecker library
    linked) behind a FiatTokenProxy at ``address``, initialized through v2.2.

    The library and the implementation are deployed normally; the proxy's runtime code is
    put at ``address`` with anvil_setCode and its two slots (implementation, admin) with
    anvil_setStorageAt, which is all its constructor does.  The initializers then run
    through the proxy, so the token's storage lives at ``address`` as on Base."""
    build = compile_usdc()
    checker = _deploy(w3, build["SignatureChecker"]["abi"], build["SignatureChecker"]["bytecode"])
    token = build["FiatTokenV2_2"]
    implementation = _deploy(w3, token["abi"], link(token, {"SignatureChecker": checker}))
    address = to_checksum_address(address)
    resp = w3.provider.make_request("anvil_setCode", [address, build["FiatTokenProxy"]["deployed_bytecode"]])
    if "error" in resp:
        raise AnvilError(f"anvil_setCode failed: {resp['error']}")
    _set_storage(w3, address, PROXY_IMPLEMENTATION_SLOT, bytes.fromhex(implementation[2:].rjust(64, "0")))
    _set_storage(w3, address, PROXY_ADMIN_SLOT, bytes.fromhex(USDC_PROXY_ADMIN[2:].rjust(64, "0")))
    contract = w3.eth.contract(address=address, abi=token["abi"])
    owner = {"from": USDC_OWNER}
    for call in (
        contract.functions.initialize(name, symbol, "USD", 6, USDC_OWNER, USDC_OWNER, USDC_OWNER, USDC_OWNER),
        contract.functions.initializeV2(name),
        contract.functions.initializeV2_1(USDC_OWNER),
        contract.functions.initializeV2_2([], symbol),
        contract.functions.configureMinter(USDC_OWNER, 2**256 - 1),
    ):
        receipt = w3.eth.wait_for_transaction_receipt(call.transact(owner), timeout=30)
        if receipt["status"] != 1:
            raise AnvilError(f"USDC set-up call reverted: {call.fn_name}")
    if (contract.functions.name().call(), contract.functions.version().call()) != (name, "2"):
        raise AnvilError(f"USDC at {address} is not {name!r} version 2")
    return TokenHandle(w3, address, contract, name, "2", minter=USDC_OWNER)


# -------------------------------------------------------------------- signing


def _chain_id_of(network: str) -> int:
    if network.startswith("eip155:"):
        return int(network.split(":", 1)[1])
    if network in _V1_CHAIN_IDS:
        return _V1_CHAIN_IDS[network]
    raise ValueError(f"unknown network {network!r}")


def sign_payment(
    payer: LocalAccount,
    pay_to: str,
    value_micro: int,
    network: str = "eip155:8453",
    version: int = 2,
    *,
    asset: str | None = None,
    name: str | None = None,
    token_version: str | None = None,
    max_timeout_seconds: int = 600,
    resource_url: str = "https://sandbox.test/v1/runs",
    spend_controls: Any = False,
) -> tuple[dict[str, Any], str]:
    """Sign an x402 "exact" EVM payment with the official SDK (``x402ClientSync``).

    ``version=2``: CAIP-2 ``network`` (``eip155:8453``), ``PAYMENT-SIGNATURE`` header value.
    ``version=1``: legacy ``network`` (``base``; a CAIP-2 id is mapped), ``X-PAYMENT`` value.
    ``asset``/``name``/``token_version`` default to that chain's USDC and its domain.
    ``spend_controls=False`` disables the SDK's client-side allowlist and its $1 default cap.
    Returns ``(payment_payload_dict_camelCase, base64_header_value)``.
    """
    from x402 import x402ClientSync
    from x402.http import encode_payment_signature_header
    from x402.mechanisms.evm.exact import ExactEvmScheme
    from x402.mechanisms.evm.exact.v1.client import ExactEvmSchemeV1
    from x402.schemas import PaymentRequired, PaymentRequirements, ResourceInfo
    from x402.schemas.v1 import PaymentRequiredV1, PaymentRequirementsV1

    chain_id = _chain_id_of(network)
    d_asset, d_name, d_version = _DEFAULT_TOKEN.get(chain_id, (None, None, "2"))
    asset = to_checksum_address(asset or d_asset)
    extra = {"name": name or d_name, "version": token_version or d_version}
    pay_to = to_checksum_address(pay_to)

    client = x402ClientSync()
    if spend_controls is not None:
        client.set_spend_controls(spend_controls)
    if version == 2:
        caip2 = network if network.startswith("eip155:") else f"eip155:{chain_id}"
        client.register("eip155:*", ExactEvmScheme(signer=payer))
        required = PaymentRequired(
            x402_version=2,
            resource=ResourceInfo(url=resource_url),
            accepts=[
                PaymentRequirements(
                    scheme="exact",
                    network=caip2,
                    asset=asset,
                    amount=str(value_micro),
                    pay_to=pay_to,
                    max_timeout_seconds=max_timeout_seconds,
                    extra=extra,
                )
            ],
        )
    elif version == 1:
        v1_net = network if not network.startswith("eip155:") else _V1_NAMES[chain_id]
        client.register_v1(v1_net, ExactEvmSchemeV1(signer=payer))
        required = PaymentRequiredV1(
            x402_version=1,
            accepts=[
                PaymentRequirementsV1(
                    scheme="exact",
                    network=v1_net,
                    max_amount_required=str(value_micro),
                    resource=resource_url,
                    pay_to=pay_to,
                    max_timeout_seconds=max_timeout_seconds,
                    asset=asset,
                    extra=extra,
                )
            ],
        )
    else:
        raise ValueError(f"x402 version must be 1 or 2, not {version!r}")
    payload = client.create_payment_payload(required)
    header = encode_payment_signature_header(payload)
    as_dict = json.loads(payload.model_dump_json(by_alias=True, exclude_none=True))
    return as_dict, header


def sign_authorization(
    payer: LocalAccount,
    token: str,
    to: str,
    value: int,
    valid_after: int = 0,
    valid_before: int | None = None,
    nonce: str | bytes | None = None,
    *,
    name: str = "USD Coin",
    version: str = "2",
    chain_id: int = 8453,
    from_address: str | None = None,
) -> dict[str, Any]:
    """EIP-3009 TransferWithAuthorization signed directly with eth_account (no SDK),
    for cases the SDK won't produce (future validAfter, past validBefore, wrong domain).
    ``from_address``: the authorizer when it is not ``payer`` itself (a smart wallet that
    ``payer`` owns: the wallet checks ``payer``'s signature of the EIP-712 digest).
    Returns the x402 exact inner payload ``{"signature", "authorization"}``."""
    import time

    if valid_before is None:
        valid_before = int(time.time()) + 600
    if nonce is None:
        nonce = secrets.token_bytes(32)
    nonce_hex = nonce if isinstance(nonce, str) else "0x" + nonce.hex()
    authorizer = to_checksum_address(from_address or payer.address)
    message = {
        "from": authorizer,
        "to": to_checksum_address(to),
        "value": int(value),
        "validAfter": int(valid_after),
        "validBefore": int(valid_before),
        "nonce": bytes.fromhex(nonce_hex[2:]),
    }
    typed = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "TransferWithAuthorization": [
                {"name": "from", "type": "address"},
                {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"},
                {"name": "nonce", "type": "bytes32"},
            ],
        },
        "primaryType": "TransferWithAuthorization",
        "domain": {
            "name": name,
            "version": version,
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(token),
        },
        "message": message,
    }
    signed = payer.sign_typed_data(full_message=typed)
    return {
        "signature": signed.signature.to_0x_hex(),
        "authorization": {
            "from": authorizer,
            "to": to_checksum_address(to),
            "value": str(value),
            "validAfter": str(valid_after),
            "validBefore": str(valid_before),
            "nonce": nonce_hex,
        },
    }


# ------------------------------------------------------------ smart wallets

ERC6492_MAGIC = bytes.fromhex("64926492" * 8)


@dataclass
class WalletFactory:
    """OwnerWalletFactory (tests/chain/contracts): CREATE2 EIP-1271 wallets of one owner."""

    w3: Any
    contract: Any

    @property
    def address(self) -> str:
        return self.contract.address

    def address_of(self, owner: str, salt: bytes) -> str:
        return self.contract.functions.addressOf(to_checksum_address(owner), salt).call()

    def deploy_call(self, owner: str, salt: bytes) -> bytes:
        """The calldata of ``deploy(owner, salt)`` (what an ERC-6492 signature carries)."""
        data = self.contract.encode_abi("deploy", args=[to_checksum_address(owner), salt])
        return bytes.fromhex(data[2:])

    def deploy(self, owner: str, salt: bytes, sender: LocalAccount | str, *, wait: bool = True) -> str:
        tx = _send(self.w3, self.contract.functions.deploy(to_checksum_address(owner), salt), sender, gas=500_000)
        if wait:
            self.w3.eth.wait_for_transaction_receipt(tx, timeout=30)
        return tx


def deploy_wallet_factory(w3, deployer: LocalAccount | str) -> WalletFactory:
    art = compile_contract("OwnerWalletFactory")
    tx = _send(w3, w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]).constructor(), deployer)
    address = w3.eth.wait_for_transaction_receipt(tx, timeout=30)["contractAddress"]
    return WalletFactory(w3, w3.eth.contract(address=address, abi=art["abi"]))


def erc6492_wrap(factory: str, factory_calldata: bytes, signature: str) -> str:
    """An ERC-6492 signature: abi.encode(factory, calldata, inner signature) + the magic suffix."""
    from eth_abi import encode

    inner = bytes.fromhex(signature[2:])
    body = encode(["address", "bytes", "bytes"], [to_checksum_address(factory), factory_calldata, inner])
    return "0x" + (body + ERC6492_MAGIC).hex()


# ------------------------------------------------------------------ settling


def inner_payload(payload: Any) -> dict[str, Any]:
    """The ``{"signature", "authorization"}`` part of: a PaymentPayload dict (v1/v2),
    a pydantic PaymentPayload, a base64 header value, or the inner dict itself."""
    if isinstance(payload, (str, bytes)):
        raw = payload.encode() if isinstance(payload, str) else payload
        payload = json.loads(base64.b64decode(raw + b"=" * (-len(raw) % 4)))
    elif hasattr(payload, "model_dump_json"):
        payload = json.loads(payload.model_dump_json(by_alias=True))
    if "authorization" in payload:
        return payload
    return payload["payload"]


def split_signature(signature: str | bytes) -> tuple[int, bytes, bytes]:
    """65-byte r||s||v -> (v, r, s) with v in {27, 28}."""
    sig = bytes.fromhex(signature[2:] if signature.startswith("0x") else signature) if isinstance(
        signature, str
    ) else signature
    if len(sig) != 65:
        raise ValueError(f"expected a 65-byte signature, got {len(sig)} bytes")
    v = sig[64]
    return (v + 27 if v < 27 else v), sig[:32], sig[32:64]


def settle_on_chain(
    w3,
    usdc_address: str,
    payload: Any,
    relayer: LocalAccount | str,
    *,
    use_bytes_signature: bool = False,
    gas: int | None = None,
    wait: bool = True,
) -> str:
    """Submit ``transferWithAuthorization`` for an x402 exact payload, as a facilitator.

    ``relayer``: a LocalAccount (signed locally) or an unlocked anvil address.
    ``gas=None`` estimates first, so a call that would revert raises web3's
    ``ContractLogicError`` carrying the revert string and nothing is broadcast;
    pass ``gas=...`` to broadcast anyway and get a mined status-0 receipt.
    Returns the tx hash as ``0x...``; with ``wait`` it also waits for the receipt.
    """
    inner = inner_payload(payload)
    auth = inner["authorization"]
    contract = w3.eth.contract(address=to_checksum_address(usdc_address), abi=_artifact()["abi"])
    args = [
        to_checksum_address(auth["from"]),
        to_checksum_address(auth["to"]),
        int(auth["value"]),
        int(auth["validAfter"]),
        int(auth["validBefore"]),
        bytes.fromhex(auth["nonce"][2:]),
    ]
    sig = inner["signature"]
    if use_bytes_signature or len(sig) != 2 + 130:
        fn = contract.get_function_by_signature(_TWA_BYTES)(*args, bytes.fromhex(sig[2:]))
    else:
        v, r, s = split_signature(sig)
        fn = contract.get_function_by_signature(_TWA_VRS)(*args, v, r, s)
    tx_hash = _send(w3, fn, relayer, gas=gas)
    if wait:
        w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    return tx_hash


# ------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def anvil(tmp_path_factory):
    """A session-wide anvil (chain id 8453) on a free port; ``stop()``/``start()``
    keep the chain (``--state`` file). Killed at the end of the session."""
    try:
        node = Anvil(
            chain_id=8453,
            state_dir=tmp_path_factory.mktemp("anvil"),
            slots_in_an_epoch=int(os.environ["ANVIL_SLOTS_IN_AN_EPOCH"])
            if os.environ.get("ANVIL_SLOTS_IN_AN_EPOCH")
            else None,
        )
        node.start()
    except AnvilNotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield node
    finally:
        node.kill()


@pytest.fixture(scope="session")
def w3(anvil):
    web3 = make_web3(anvil.rpc_url)
    assert web3.eth.chain_id == 8453
    return web3


@pytest.fixture(scope="session")
def usdc_artifact():
    return _artifact()


@pytest.fixture(scope="session")
def deployer() -> LocalAccount:
    return Account.from_key(DEV_KEYS[0])


@pytest.fixture(scope="session")
def facilitator() -> LocalAccount:
    return Account.from_key(DEV_KEYS[1])


@pytest.fixture(scope="session")
def payer() -> LocalAccount:
    return Account.create()


@pytest.fixture(scope="session")
def pay_to() -> str:
    return Account.create().address


@pytest.fixture(scope="session")
def circle_usdc():
    return compile_usdc()


@pytest.fixture(scope="session")
def usdc(w3, circle_usdc, payer) -> TokenHandle:
    """Circle's real USDC (FiatTokenV2_2 behind FiatTokenProxy) at the canonical Base
    address 0x8335...2913.  The payer holds PAYER_FUNDS µUSDC there."""
    token = install_circle_usdc(w3, BASE_USDC)
    token.mint(payer.address, PAYER_FUNDS)
    return token


@pytest.fixture(scope="session")
def lookalike_usdc(w3, usdc, payer) -> TokenHandle:
    """The mock TestUSDC with the same name "USD Coin"/"2", NOT at the configured USDC
    address: a token emitting USDC's events from elsewhere (the real contract cannot)."""
    token = install_token_at(w3, LOOKALIKE_ADDRESS, "USD Coin", "2")
    token.mint(payer.address, PAYER_FUNDS)
    return token


@pytest.fixture(scope="session")
def wallet_factory(w3, deployer) -> WalletFactory:
    return deploy_wallet_factory(w3, deployer)


@pytest.fixture
def chain_snapshot(anvil):
    """Revert the chain to its pre-test state afterwards (if anvil was not restarted)."""
    snap = anvil.snapshot()
    starts = anvil.starts
    yield snap
    if anvil.running and anvil.starts == starts:
        try:
            anvil.revert(snap)
        except AnvilError:
            pass
