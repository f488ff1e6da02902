"""Opaque cursors for keyset pagination: every list pages on (a time, an id)."""

from __future__ import annotations

import base64
import binascii

import msgspec

from metering.errors import Invalid, field_error

Position = tuple[int, str]


def encode_cursor(key: int, row_id: str) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode((key, row_id))).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Position | None:
    """The position a cursor stands for; a cursor that is not ours is a 422, not a 500."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=Position)
    except (binascii.Error, msgspec.DecodeError, ValueError):
        raise Invalid("cursor is not valid", [field_error("is not a cursor from this API", "cursor")]) from None
