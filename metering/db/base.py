"""Helpers shared by table definitions and the queries on them."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TypeVar

from sqlalchemy import BigInteger, ColumnElement, Integer, Row, Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field


def now_us() -> int:
    """Wall-clock now in integer microseconds since the epoch (no float on the way)."""
    return time.time_ns() // 1000


def bigint_pk() -> int | None:
    # SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT.
    return Field(default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer, "sqlite"))


T = TypeVar("T")
IN_LIST_LIMIT = 500  # keys per ``IN (...)`` list: far below SQLite's limit on bound variables


def in_slices(keys: Sequence[T]) -> Iterator[Sequence[T]]:
    """``keys`` in slices short enough for one ``IN (...)`` list each."""
    for i in range(0, len(keys), IN_LIST_LIMIT):
        yield keys[i : i + IN_LIST_LIMIT]


async def rows_in(session: AsyncSession, query: Select, column: ColumnElement, keys: Sequence) -> list[Row]:
    """``query`` restricted to ``column IN keys``, as many statements as the slices need."""
    return [row for part in in_slices(keys) for row in (await session.execute(query.where(column.in_(part)))).all()]

