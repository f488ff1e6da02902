"""The webhook signature: HMAC-SHA256 over ``f"{timestamp}.{body}"``, hex, as ``v1=<hex>``.

Signing the timestamp with the body lets a receiver refuse old replays; the ``v1=``
prefix leaves room for another scheme (or two secrets during a rotation) later.
"""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify(secret: str, timestamp: int, body: bytes, header: str) -> bool:
    """What a receiver does: compare in constant time, against any ``v1=`` entry of the header."""
    expected = sign(secret, timestamp, body)
    return any(hmac.compare_digest(expected, part.strip()) for part in header.split(","))
