"""Short lookups by key on PostgreSQL (the token check on every request), on asyncpg directly.

Through the async engine such a lookup cost ~540 us of CPU here: a pool checkout with (then)
its pre-ping round trip, SQLAlchemy's connection, autocommit and statement machinery, and the
greenlet bridge.  asyncpg alone, on a connection it keeps (db.pg_connection), costs ~60 us.
One connection, one lookup at a time: each is a single round trip to an index, so it is not
what requests wait for.  If the lookup fails because the server closed the connection, it is
run once more (a read) on a new one.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from metering.db.pg_connection import GONE, OwnConnection

_NAMED = re.compile(r"(?<!:):([A-Za-z_]\w*)")


def numbered(sql: str) -> tuple[str, list[str]]:
    """``:name`` parameters as asyncpg's ``$1, $2, ...``, and the names in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return _NAMED.sub(number, sql), names


# The same few statements on every request: each converted once (its names are only read).
_numbered_once = lru_cache(maxsize=64)(numbered)


class PgLookup:
    def __init__(self, engine: AsyncEngine) -> None:
        self._own = OwnConnection(engine)

    async def first_row(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        query, names = _numbered_once(sql)
        values = [params[name] for name in names]
        async with self._own.lock:
            try:
                row = await (await self._own.get()).fetchrow(query, *values)
            except GONE:  # the server closed it (a restart?): once more, on a new connection
                self._own.drop()
                row = await (await self._own.get()).fetchrow(query, *values)
        return None if row is None else tuple(row)

    async def close(self) -> None:
        await self._own.close()
