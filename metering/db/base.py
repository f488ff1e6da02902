"""Helpers shared by table definitions."""

from __future__ import annotations

import time

from sqlalchemy import BigInteger, Integer
from sqlmodel import Field


def now_us() -> int:
    """Wall-clock now in integer microseconds since the epoch (no float on the way)."""
    return time.time_ns() // 1000


def bigint_pk() -> int | None:
    # SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT.
    return Field(default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer, "sqlite"))

