"""Everything the service asks the chain: the one module that imports web3.

Two questions, each answered with evidence or not at all:

* ``check_payment``: does this transaction carry this x402 payment, on the configured USDC,
  and is its block final?  -> pending | confirmed | rejected (with a reason).
* ``check_block``: is the block of a confirmed settlement still canonical (and final yet)?
* ``check_signature``: for a payer whose signature is not its own ECDSA one (a smart
  wallet: EIP-1271, or ERC-6492 while undeployed), what the x402 ``exact`` scheme's own
  verification makes of it.

An RPC that fails (refused, timeout, 5xx, garbage) never decides anything: the answer is
"still pending" with the error text kept for the operator.  Error texts never carry the RPC
URL, which often holds an API key.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ClientTimeout
from eth_utils import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import BadFunctionCallOutput, BlockNotFound, ContractLogicError, TransactionNotFound
from x402.mechanisms.evm import hash_eip3009_authorization, verify_eoa_signature
from x402.mechanisms.evm.erc6492 import has_deployment_info, parse_erc6492_signature
from x402.mechanisms.evm.exact.eip3009_utils import classify_eip3009_signature
from x402.mechanisms.evm.types import ExactEIP3009Authorization

from metering.settlements.models import Reason, Status
from metering.settlements.networks import Network
from metering.settlements.payload import Payment

# web3 logs the endpoint URI (debug: every request; info: on disconnect).  The URI can
# carry an API key, so web3's own log lines stay below the service's log level.
logging.getLogger("web3").setLevel(logging.WARNING)

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
AUTHORIZATION_USED_TOPIC = "0x98de503528ee59b575ef0c0a2576a82497bfc029a5685b209e9ec333479b10a5"
MAX_ERROR_CHARS = 300
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


@dataclass(frozen=True)
class Expected:
    """What the payment says must have happened on chain (addresses and nonce lowercase)."""

    payer: str
    pay_to: str
    value: int
    nonce: str
    valid_before: int


@dataclass(frozen=True)
class Verdict:
    status: str  # Status.PENDING | CONFIRMED | REJECTED
    reason: str | None = None
    error: str | None = None  # why the chain could not answer (pending only)
    block_number: int | None = None
    block_hash: str | None = None
    log_index: int | None = None  # of the Transfer log
    # The block of the receipt the verdict rests on is canonical and final: for a rejection
    # of a mined transaction, whether another reorg can still replace that evidence.
    block_final: bool = False


@dataclass(frozen=True)
class BlockCheck:
    state: str  # "watch" (canonical, not final yet) | "final" | "reorged" | "unknown"
    error: str | None = None


# ------------------------------------------------------------------ offline checks


def _typed(payment: Payment) -> ExactEIP3009Authorization:
    return ExactEIP3009Authorization(
        from_address=to_checksum_address(payment.payer),
        to=to_checksum_address(payment.pay_to),
        value=str(payment.value),
        valid_after=str(payment.valid_after),
        valid_before=str(payment.valid_before),
        nonce=payment.authorization.nonce,
    )


def signature_offline(net: Network, payment: Payment) -> bool | None:
    """What can be said without the chain: True when the signature is the payer's own
    ECDSA signature of the EIP-712 ``TransferWithAuthorization`` under the configured
    USDC's domain, False when it cannot be a signature at all (a broken ERC-6492
    wrapper), None when only the chain can tell (a smart wallet's, or no one's).

    A valid ECDSA signature is taken as is: USDC's own SignatureChecker decided on chain
    whether the transfer happened, and the logs are checked for that."""
    try:
        parsed = parse_erc6492_signature(bytes.fromhex(payment.signature[2:]))
    except ValueError:
        return False
    if has_deployment_info(parsed) or len(parsed.inner_signature) != 65:
        return None
    digest = hash_eip3009_authorization(
        _typed(payment), net.chain_id, to_checksum_address(net.usdc), net.eip712_name, net.eip712_version
    )
    try:
        return True if verify_eoa_signature(digest, parsed.inner_signature, payment.payer) else None
    except ValueError:  # a v that is no ECDSA recovery id
        return None


# --------------------------------------------------------------------- the chain


@asynccontextmanager
async def _connect(net: Network) -> AsyncIterator[AsyncWeb3]:
    # No retries inside web3: the scheduler re-checks with backoff, and a request must
    # not hang for the sum of several timeouts.
    provider = AsyncHTTPProvider(
        net.rpc_url,
        request_kwargs={"timeout": ClientTimeout(total=net.timeout_seconds)},
        exception_retry_configuration=None,
    )
    try:
        yield AsyncWeb3(provider)
    finally:
        await provider.disconnect()


async def check_payment(net: Network, payment: Expected, transaction: str) -> Verdict:
    try:
        async with _connect(net) as w3:
            if await w3.eth.chain_id != net.chain_id:
                return Verdict(Status.REJECTED, Reason.CHAIN_ID_MISMATCH)
            try:
                receipt = await w3.eth.get_transaction_receipt(transaction)
            except TransactionNotFound:
                # Not mined (yet).  Once a block at or past validBefore exists, every later
                # block is too, and USDC requires block.timestamp < validBefore: never.
                latest = await w3.eth.get_block("latest")
                if latest["timestamp"] >= payment.valid_before:
                    return Verdict(Status.REJECTED, Reason.EXPIRED)
                return Verdict(Status.PENDING)
            mined = {"block_number": receipt["blockNumber"], "block_hash": _hex(receipt["blockHash"])}
            # A receipt whose block is not on the canonical chain is evidence of nothing.
            block = await w3.eth.get_block(mined["block_number"])
            if _hex(block["hash"]) != mined["block_hash"]:
                return Verdict(Status.PENDING, error="the receipt's block is not canonical (yet)", **mined)
            final = mined["block_number"] <= await final_block(w3, net)
            if receipt["status"] != 1:
                return Verdict(Status.REJECTED, Reason.TRANSACTION_FAILED, block_final=final, **mined)
            reason, log_index = match_logs(receipt["logs"], net.usdc, payment)
            if reason is not None:
                # Rejected now: a report's transaction does not pay as reported.  (A reorged
                # settlement waits for block_final: its transaction may be mined yet again.)
                return Verdict(Status.REJECTED, reason, block_final=final, **mined)
            status = Status.CONFIRMED if final else Status.PENDING
            return Verdict(status, log_index=log_index, block_final=final, **mined)
    except Exception as exc:  # an RPC failure of any kind decides nothing
        return Verdict(Status.PENDING, error=describe_error(exc, net))


class _ChainReads:
    """The two reads x402's signature verification makes (a ``FacilitatorEvmSigner``'s
    ``get_code`` and ``read_contract``), answered by the service's AsyncWeb3.

    x402's code is synchronous: it runs in a worker thread and each read is handed to
    the event loop.  x402 counts any error of ``isValidSignature`` as "not valid"; an
    RPC failure must decide nothing, so it is kept here and raised afterwards."""

    def __init__(self, w3: AsyncWeb3, loop: asyncio.AbstractEventLoop) -> None:
        self.w3, self.loop = w3, loop
        self.failure: BaseException | None = None

    def _wait(self, call: Any) -> Any:
        try:
            return asyncio.run_coroutine_threadsafe(call, self.loop).result()
        except (ContractLogicError, BadFunctionCallOutput):
            raise  # the wallet answered: not valid
        except Exception as exc:
            self.failure = exc
            raise

    def get_code(self, address: str) -> bytes:
        return bytes(self._wait(self.w3.eth.get_code(to_checksum_address(address))))

    def read_contract(self, address: str, abi: list[dict[str, Any]], function_name: str, *args: Any) -> Any:
        contract = self.w3.eth.contract(address=to_checksum_address(address), abi=abi)
        return self._wait(contract.get_function_by_name(function_name)(*args).call())


async def check_signature(net: Network, payment: Payment) -> Verdict | None:
    """A smart wallet's signature, verified as the x402 ``exact`` EVM scheme verifies it
    (its own ``classify_eip3009_signature``): EIP-1271 ``isValidSignature`` for a wallet
    with code, ERC-6492 for one not yet deployed.  None when the payment may go on to the
    chain evidence: valid, or an ERC-6492 signature that only its factory's deployment can
    make valid (x402 leaves that to simulating the transfer; here the mined transfer's
    logs prove it).  Else a rejection, or pending when the RPC failed."""
    try:
        async with _connect(net) as w3:
            if await w3.eth.chain_id != net.chain_id:
                return Verdict(Status.REJECTED, Reason.CHAIN_ID_MISMATCH)
            reads = _ChainReads(w3, asyncio.get_running_loop())
            try:
                verdict = await asyncio.to_thread(
                    classify_eip3009_signature,
                    reads,
                    _typed(payment),
                    bytes.fromhex(payment.signature[2:]),
                    net.chain_id,
                    to_checksum_address(net.usdc),
                    net.eip712_name,
                    net.eip712_version,
                )
            except ValueError:
                if reads.failure is None:  # x402 refused the signature's form (a bad v, say)
                    return Verdict(Status.REJECTED, Reason.INVALID_SIGNATURE)
                raise
            if reads.failure is not None:
                raise reads.failure
    except Exception as exc:  # an RPC failure of any kind decides nothing
        return Verdict(Status.PENDING, error=describe_error(exc, net))
    if verdict.valid:
        return None
    if has_deployment_info(verdict.sig_data):
        return None
    # An EOA's wrong signature, an undeployed wallet without a factory to deploy it, or a
    # deployed wallet whose isValidSignature says no, as USDC's SignatureChecker would.
    return Verdict(Status.REJECTED, Reason.INVALID_SIGNATURE)


async def check_block(net: Network, block_number: int, block_hash: str) -> BlockCheck:
    """Whether a confirmed settlement's block is still on the canonical chain.

    ``reorged`` needs positive evidence: another block at that height.  A node whose head
    is below the block (lagging, or mid-reorg) proves nothing yet.
    """
    try:
        async with _connect(net) as w3:
            if await w3.eth.chain_id != net.chain_id:
                return BlockCheck("unknown", "the RPC serves another chain id")
            try:
                block = await w3.eth.get_block(block_number)
            except BlockNotFound:
                return BlockCheck("unknown", "the chain head is below the settlement's block")
            if _hex(block["hash"]) != block_hash:
                return BlockCheck("reorged")
            finalized = (await w3.eth.get_block("finalized"))["number"]
            return BlockCheck("final" if block_number <= finalized else "watch")
    except Exception as exc:
        return BlockCheck("unknown", describe_error(exc, net))


async def final_block(w3: AsyncWeb3, net: Network) -> int:
    """The highest block number that counts as final under the network's rule."""
    if isinstance(net.finality, int):
        return await w3.eth.block_number - net.finality + 1
    return (await w3.eth.get_block(net.finality))["number"]


def match_logs(logs: Sequence[Any], usdc: str, payment: Expected) -> tuple[str | None, int | None]:
    """(reason, None) on a mismatch, else (None, the Transfer log's index).

    Only logs emitted by the configured USDC count: any contract can emit events with
    the same signatures (a look-alike token does).
    """
    own = sorted((lg for lg in logs if str(lg["address"]).lower() == usdc), key=lambda lg: lg["logIndex"])
    if not own:
        return Reason.LOGS_MISSING, None
    used = [lg for lg in own if _topics(lg)[:1] == [AUTHORIZATION_USED_TOPIC] and len(lg["topics"]) == 3]
    hit = next((lg for lg in used if _topic_address(lg, 1) == payment.payer and _topics(lg)[2] == payment.nonce), None)
    if hit is None:
        by_payer = any(_topic_address(lg, 1) == payment.payer for lg in used)
        return (Reason.NONCE_MISMATCH if by_payer else Reason.AUTHORIZATION_NOT_USED), None
    # USDC emits AuthorizationUsed and then the Transfer it authorizes; in a batch of
    # several authorizations the next Transfer after ours is ours.
    transfer = next(
        (lg for lg in own if lg["logIndex"] > hit["logIndex"] and _topics(lg)[:1] == [TRANSFER_TOPIC]), None
    )
    if (
        transfer is None
        or len(transfer["topics"]) != 3
        or _topic_address(transfer, 1) != payment.payer
        or _topic_address(transfer, 2) != payment.pay_to
        or int.from_bytes(bytes(transfer["data"]), "big") != payment.value
    ):
        return Reason.TRANSFER_MISMATCH, None
    return None, transfer["logIndex"]


def _topics(log: Any) -> list[str]:
    return [_hex(t) for t in log["topics"]]


def _topic_address(log: Any, i: int) -> str:
    return "0x" + _hex(log["topics"][i])[-40:]


def _hex(value: Any) -> str:
    # hexbytes 2: .hex() has no 0x prefix; bytes(...) works for HexBytes and bytes alike.
    if isinstance(value, str):
        return value.lower()
    return "0x" + bytes(value).hex()


def describe_error(exc: BaseException, net: Network) -> str:
    """``the RPC of <network>: Type: short message``, with every URL and every part of the
    RPC URL (userinfo, host, port, path, query) blanked out: the network names the endpoint."""
    text = str(exc)
    rpc_url = net.rpc_url
    parts = urlsplit(rpc_url)
    port = str(parts.port) if parts.port else None
    secrets = [rpc_url, rpc_url.rstrip("/"), parts.netloc, parts.path, parts.query, parts.fragment, parts.username,
               parts.password, parts.hostname]
    for secret in sorted({s for s in secrets if s and len(s) > 1}, key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    if port:  # "host:8545", "('host', 8545)": the port on its own, as a whole number only
        text = re.sub(rf"(?<![0-9]){port}(?![0-9])", "<redacted>", text)
    text = " ".join(_URL.sub("<url>", text).split())
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + "..."
    what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"the RPC of {net.caip2}: {what}"
