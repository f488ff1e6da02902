"""Reads on the hot paths (token checks, price refreshes, usage queries) in one hand-off each.

aiosqlite hands every cursor operation to its thread and back: a session's begin, each
statement, each fetch and the commit are separate trips (~0.15 ms of CPU each here), which
made a usage query spend twice as long in the driver as in SQLite.  For a SQLite file the
whole read runs as one synchronous function on a small thread pool with its own
query-only connections (sqlite3 releases the GIL while it works); a read is one deferred
transaction, so its statements see one snapshot, or none for a single statement.  Otherwise
(PostgreSQL) it runs on the async engine through SQLAlchemy's greenlet bridge, which costs no
extra trips with asyncpg, in autocommit when it needs no snapshot.
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine

from metering.db.pg_lookup import PgLookup
from metering.db.sqlite_threads import sqlite_thread_engine

T = TypeVar("T")
READER_THREADS = 2  # the machine's cores: more threads only queue for the same CPU


class ReadRunner:
    def __init__(self, engine: AsyncEngine, busy_timeout_ms: int) -> None:
        self.engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._sync: Engine | None = None
        self._path: str | None = None
        self._inline_conn: sqlite3.Connection | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._pg_lookup = PgLookup(engine) if engine.dialect.name == "postgresql" else None
        url = engine.url
        if engine.dialect.name == "sqlite" and url.database not in (None, "", ":memory:"):
            # Autocommit at the driver: _read begins a transaction only when asked to.
            self._sync = sqlite_thread_engine(url, connections=READER_THREADS,
                                              pragmas=(f"busy_timeout={busy_timeout_ms}", "query_only=ON"))
            self._path = url.database
            self._threads = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="sqlite-reader")
            weakref.finalize(self, _shutdown, self._sync, self._threads)

    async def run(self, fn: Callable[[Connection], T], *, snapshot: bool = True) -> T:
        """``fn(connection)``; with ``snapshot``, in one read transaction (its statements agree).

        Without it each statement reads on its own: enough for one statement (a token check),
        and it saves the BEGIN and the COMMIT (or ROLLBACK), a third of such a read's cost.
        """
        if self._threads is not None:
            return await asyncio.get_running_loop().run_in_executor(self._threads, self._read, fn, snapshot)
        # PostgreSQL: without a snapshot, autocommit spares the BEGIN and ROLLBACK round trips.
        async with (self.engine if snapshot else self._autocommit).connect() as conn:
            return await conn.run_sync(fn)

    async def first_row(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of one short statement (``:name`` parameters), such as a lookup by key.

        On a SQLite file it runs right here, on the event loop, through the sqlite3 module: a
        hand-off to a reader thread costs several times such a read (and the thread must then
        win the GIL back from the loop), and so does SQLAlchemy's statement machinery.  In
        WAL mode a reader does not wait for the writer; if SQLite would have it wait for a
        lock all the same, it goes to a reader thread.  On PostgreSQL it goes through asyncpg
        directly (db.pg_lookup); elsewhere (an in-memory SQLite) it is ``run`` without a snapshot.
        """
        if self._pg_lookup is not None:
            return await self._pg_lookup.first_row(sql, params)
        if self._path is not None:
            try:
                return self._inline().execute(sql, params).fetchone()
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
        statement = text(sql)
        row = await self.run(lambda conn: conn.execute(statement, params).first(), snapshot=False)
        return None if row is None else tuple(row)

    def _inline(self) -> sqlite3.Connection:
        if self._inline_conn is None:
            # busy_timeout=0: it must never wait for a lock, which would stop the event loop.
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("PRAGMA query_only=ON")
            self._inline_conn = conn
        return self._inline_conn

    def _read(self, fn: Callable[[Connection], T], snapshot: bool) -> T:
        assert self._sync is not None
        with self._sync.connect() as conn:
            if not snapshot:
                return fn(conn)  # sqlite3 in autocommit mode: SQLAlchemy's begin and commit send nothing
            conn.exec_driver_sql("BEGIN")  # deferred: the snapshot is taken at the first read
            try:
                return fn(conn)
            finally:
                conn.exec_driver_sql("COMMIT")

    async def close(self) -> None:
        if self._pg_lookup is not None:
            await self._pg_lookup.close()
        if self._inline_conn is not None:
            self._inline_conn.close()
        if self._sync is not None and self._threads is not None:
            _shutdown(self._sync, self._threads)


def _shutdown(engine: Engine, threads: ThreadPoolExecutor) -> None:
    threads.shutdown(wait=False)
    engine.dispose()
