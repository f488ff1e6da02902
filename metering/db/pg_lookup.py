"""Short lookups by key on PostgreSQL (the token check on every request), on asyncpg directly.

Through the async engine such a lookup cost ~540 us of CPU here: a pool checkout with (then) its
pre-ping round trip, SQLAlchemy's connection, autocommit and statement machinery, and the
greenlet bridge.  asyncpg alone, on a connection it keeps, costs ~60 us.  One connection
(outside the engine's pool), one lookup at a time: each is a single round trip to an index,
so it is not what requests wait for.  Instead of a pre-ping, a connection the server has
closed is noticed (asyncpg saw it close, or the lookup fails on it) and replaced; the
lookup, a read, is then run once more.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

# SQLAlchemy's own connect arguments, which asyncpg.connect does not take.
_SQLALCHEMY_ONLY = ("async_fallback", "async_creator_fn", "prepared_statement_cache_size",
                    "prepared_statement_name_func")
_NAMED = re.compile(r"(?<!:):([A-Za-z_]\w*)")
# What a dropped connection raises in asyncpg (the server restarted, or closed it).
_GONE = (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, ConnectionError, OSError)


def numbered(sql: str) -> tuple[str, list[str]]:
    """``:name`` parameters as asyncpg's ``$1, $2, ...``, and the names in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return _NAMED.sub(number, sql), names


class PgLookup:
    def __init__(self, engine: AsyncEngine) -> None:
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        for key in _SQLALCHEMY_ONLY:
            kwargs.pop(key, None)
        self._connect_args = (args, kwargs)
        self._conn: asyncpg.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()

    async def first_row(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        query, names = numbered(sql)
        values = [params[name] for name in names]
        self._on_this_loop()
        async with self._lock:
            try:
                row = await (await self._connection()).fetchrow(query, *values)
            except _GONE:  # the server closed it (a restart?): once more, on a new connection
                self._drop()
                row = await (await self._connection()).fetchrow(query, *values)
        return None if row is None else tuple(row)

    def _on_this_loop(self) -> None:
        """A connection and a lock belong to one event loop (tests and CLI commands run several)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._drop()
            self._lock, self._loop = asyncio.Lock(), loop

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is not None and self._conn.is_closed():
            self._drop()
        if self._conn is None:
            args, kwargs = self._connect_args
            self._conn = await asyncpg.connect(*args, **kwargs)
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.terminate()
            except RuntimeError:  # its event loop is closed: so is its socket
                pass

    async def close(self) -> None:
        self._on_this_loop()
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
