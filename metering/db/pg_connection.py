"""One asyncpg connection kept outside the engine's pool, for a hot path that uses it alone.

Through the async engine each use pays a pool checkout and SQLAlchemy's connection,
statement and result machinery; asyncpg alone costs a fraction of that (db.pg_lookup,
db.pg_writer).  Users take ``lock`` around their work: one at a time on the connection.
Instead of a pre-ping, a connection the server has closed (a restart, an idle timeout,
``pg_terminate_backend``) is one asyncpg has seen close, and is replaced when next asked for.
"""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

# SQLAlchemy's own connect arguments, which asyncpg.connect does not take.
_SQLALCHEMY_ONLY = ("async_fallback", "async_creator_fn", "prepared_statement_cache_size",
                    "prepared_statement_name_func")
# What a dropped connection raises in asyncpg (the server restarted, or closed it).
GONE = (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, ConnectionError, OSError)


class OwnConnection:
    def __init__(self, engine: AsyncEngine) -> None:
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        for key in _SQLALCHEMY_ONLY:
            kwargs.pop(key, None)
        self._connect_args = (args, kwargs)
        self._conn: asyncpg.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()

    @property
    def lock(self) -> asyncio.Lock:
        """Held while the connection is used.  A connection and a lock belong to one event
        loop (tests and CLI commands run several): on another, both are made anew."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self.drop()
            self._lock, self._loop = asyncio.Lock(), loop
        return self._lock

    async def get(self) -> asyncpg.Connection:
        """The connection (opened, or opened again, if need be); call with ``lock`` held."""
        if self._conn is not None and self._conn.is_closed():
            self.drop()
        if self._conn is None:
            args, kwargs = self._connect_args
            self._conn = await asyncpg.connect(*args, **kwargs)
        return self._conn

    def drop(self) -> None:
        """Forget the connection (closed at once): the next ``get`` opens another."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.terminate()
            except RuntimeError:  # its event loop is closed: so is its socket
                pass

    async def close(self) -> None:
        async with self.lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
