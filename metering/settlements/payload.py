"""Read an x402 PaymentPayload (v1 or v2), as JSON or as the raw base64 header.

The official ``x402`` package decodes and validates the envelope (its pydantic models and
header decoder); this module then checks the one scheme the service settles, ``exact`` on
EVM (an EIP-3009 ``transferWithAuthorization``), and turns it into plain values.  A payload
that cannot be read is a 422 naming the field; whether it *pays* is decided later.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import pydantic
from x402.http import decode_payment_signature_header
from x402.mechanisms.evm.types import ExactEIP3009Authorization, ExactEIP3009Payload
from x402.mechanisms.evm.v1.constants import V1_NETWORK_CHAIN_IDS
from x402.schemas import PaymentPayload
from x402.schemas.helpers import parse_payment_payload
from x402.schemas.v1 import PaymentPayloadV1

from metering.errors import Invalid, field_error

ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
BYTES32 = re.compile(r"0x[0-9a-fA-F]{64}")
HEX = re.compile(r"0x(?:[0-9a-fA-F]{2})+")
UINT = re.compile(r"[0-9]{1,78}")
UINT256_MAX = 2**256 - 1
# Amounts are stored in BIGINT; no real USDC balance comes near 2^63 base units.
AMOUNT_MAX = 2**63 - 1
MAX_HEADER_CHARS = 16_384


@dataclass(frozen=True)
class Payment:
    """The parts of an x402 exact-EVM payment the settlement checks need."""

    x402_version: int
    network: str  # CAIP-2, "eip155:<chain id>"
    chain_id: int
    asset: str | None  # v2 ``accepted.asset``; v1 payloads do not carry it
    amount_required: int | None  # v2 ``accepted.amount``
    payer: str  # lowercase 0x address: ``authorization.from``
    pay_to: str  # lowercase: ``authorization.to``
    value: int
    valid_after: int
    valid_before: int
    nonce: str  # lowercase 0x + 64 hex
    signature: str
    authorization: ExactEIP3009Authorization  # the SDK's type, for EIP-712 hashing

    @property
    def fingerprint(self) -> str:
        """What identifies the payload: every decoded field that the checks read, so the
        JSON object and the header of one payload are the same, and any change is not."""
        fields = (
            self.x402_version, self.network, self.asset, self.amount_required, self.payer, self.pay_to,
            self.value, self.valid_after, self.valid_before, self.nonce, self.signature,
        )
        return hashlib.sha256(repr(fields).encode()).hexdigest()


def caip2(network: str) -> str | None:
    """``eip155:<id>`` for a CAIP-2 EVM id or a v1 name (``base`` -> ``eip155:8453``)."""
    if network in V1_NETWORK_CHAIN_IDS:
        return f"eip155:{V1_NETWORK_CHAIN_IDS[network]}"
    prefix, _, ref = network.partition(":")
    if prefix == "eip155" and ref.isascii() and ref.isdigit() and 0 < len(ref) <= 18 and int(ref) > 0:
        return f"eip155:{int(ref)}"
    return None


def read_payment(payment_payload: Any = None, payment_header: Any = None) -> Payment:
    """The payment in the request: exactly one of the JSON object or the header value."""
    if (payment_payload is None) == (payment_header is None):
        raise Invalid(
            "give exactly one of payment_payload (the JSON object) or payment_header (base64)",
            [field_error("exactly one of payment_payload and payment_header is required", "payment_payload")],
        )
    if payment_header is not None:
        return _from_model(_decode_header(payment_header), "payment_header")
    if not isinstance(payment_payload, dict):
        raise _invalid("payment_payload", "must be a JSON object")
    try:
        model = parse_payment_payload(payment_payload)
    except pydantic.ValidationError as exc:
        raise _from_pydantic(exc, "payment_payload") from None
    except ValueError as exc:  # missing or unknown x402Version
        raise _invalid("payment_payload.x402Version", str(exc)) from None
    return _from_model(model, "payment_payload")


def _decode_header(value: Any) -> PaymentPayload | PaymentPayloadV1:
    if not isinstance(value, str) or not value.strip():
        raise _invalid("payment_header", "must be the base64 PAYMENT-SIGNATURE or X-PAYMENT header value")
    if len(value) > MAX_HEADER_CHARS:
        raise _invalid("payment_header", f"is longer than {MAX_HEADER_CHARS} characters")
    try:
        return decode_payment_signature_header(value.strip())
    except pydantic.ValidationError as exc:
        raise _from_pydantic(exc, "payment_header") from None
    except (ValueError, TypeError, AttributeError):
        # base64, UTF-8 and JSON errors are all ValueErrors; a non-object JSON is the rest.
        raise _invalid("payment_header", "is not base64 of a JSON x402 PaymentPayload") from None


def _from_model(model: PaymentPayload | PaymentPayloadV1, where: str) -> Payment:
    if isinstance(model, PaymentPayloadV1):
        scheme, raw_network, net_field = model.scheme, model.network, f"{where}.network"
        asset, required = None, None
    else:
        accepted = model.accepted
        scheme, raw_network, net_field = accepted.scheme, accepted.network, f"{where}.accepted.network"
        asset = accepted.asset.lower() if ADDRESS.fullmatch(accepted.asset) else accepted.asset
        required = _uint(accepted.amount, f"{where}.accepted.amount")
    if scheme != "exact":
        raise _invalid(net_field.rsplit(".", 1)[0] + ".scheme", f"scheme {scheme!r} is not settled here; only 'exact'")
    network = caip2(raw_network)
    if network is None:
        raise _invalid(net_field, f"{raw_network!r} is not an EVM network (eip155:<chain id>, base, base-sepolia)")
    inner = model.payload
    auth = inner.get("authorization")
    if not isinstance(auth, dict):
        raise _invalid(f"{where}.payload.authorization", "an EIP-3009 authorization object is required")
    sdk = ExactEIP3009Payload.from_dict(inner)
    a = f"{where}.payload.authorization"
    payer = _address(auth.get("from"), f"{a}.from")
    pay_to = _address(auth.get("to"), f"{a}.to")
    value = _uint(auth.get("value"), f"{a}.value")
    if value > AMOUNT_MAX:
        raise _invalid(f"{a}.value", "is larger than any USDC amount")
    valid_after = _uint(auth.get("validAfter"), f"{a}.validAfter")
    valid_before = _uint(auth.get("validBefore"), f"{a}.validBefore")
    nonce = auth.get("nonce")
    if not isinstance(nonce, str) or not BYTES32.fullmatch(nonce):
        raise _invalid(f"{a}.nonce", "must be 0x and 32 bytes of hex")
    signature = inner.get("signature")
    if not isinstance(signature, str) or not HEX.fullmatch(signature):
        raise _invalid(f"{where}.payload.signature", "must be 0x and hex bytes")
    return Payment(
        x402_version=model.x402_version,
        network=network,
        chain_id=int(network.split(":", 1)[1]),
        asset=asset,
        amount_required=required,
        payer=payer,
        pay_to=pay_to,
        value=value,
        valid_after=valid_after,
        valid_before=valid_before,
        nonce=nonce.lower(),
        signature=signature.lower(),
        authorization=sdk.authorization,
    )


def _address(value: Any, field: str) -> str:
    if not isinstance(value, str) or not ADDRESS.fullmatch(value):
        raise _invalid(field, "must be a 0x address (20 bytes of hex)")
    return value.lower()


def _uint(value: Any, field: str) -> int:
    # x402 carries every number as a decimal string; a JSON number is refused, never
    # converted, so no amount ever passes through a float.
    if not isinstance(value, str) or not UINT.fullmatch(value) or int(value) > UINT256_MAX:
        raise _invalid(field, "must be a decimal string of a uint256")
    return int(value)


def _from_pydantic(exc: pydantic.ValidationError, where: str) -> Invalid:
    errors = [
        field_error(err["msg"], ".".join([where, *(str(p) for p in err["loc"])]))
        for err in exc.errors(include_url=False)
    ]
    return Invalid("the x402 payment payload is invalid", errors)


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(f"the x402 payment is invalid: {field} {message}", [field_error(message, field)])
