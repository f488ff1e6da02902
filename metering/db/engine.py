"""Engines and sessions for SQLite (aiosqlite) and PostgreSQL (asyncpg).

SQLite runs in WAL mode with ``synchronous=FULL`` so that a committed transaction
survives a crash (a 202 promises that).  Writers take the write lock up front with
``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes can fail with
SQLITE_BUSY instead of waiting when another process holds the lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from metering.db.reader import ReadRunner
from metering.db.sqlite_threads import SQLITE_BUSY_TIMEOUT_MS
from metering.db.writer import WriteRunner

T = TypeVar("T")
# Pages of a new SQLite file (the first connection's, the migrations'; a file keeps the size
# it was made with).  An ingest commit writes every page it dirtied to the WAL, one write
# and frame header each, and most rows it adds go in at the end of their tables and indexes:
# bigger pages, fewer of them.  2026-12-04, alternating with 4 KiB, events/s: 10,000-event
# requests from 2 clients +20% (the writer's CPU per event 21.5 -> 18.3 us), 1,000 x 4
# +16-21%, 100 x 8 +2-13%, single events from 8 clients -1-2%; 16 KiB gave +30% at
# 10,000 x 2 but -7-20% on single events, whose commits write whole pages too.
SQLITE_PAGE_SIZE = 8192


def _sqlite_setup(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")  # a new file only: see SQLITE_PAGE_SIZE
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """One engine, with a read path and a write path."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._writer = engine.execution_options(sqlite_begin="IMMEDIATE")
        self._reader: ReadRunner | None = None
        self._write_runner: WriteRunner | None = None
        # ``write`` blocks under way in this process, waiting for SQLite's write lock or
        # holding it: the ingest writer keeps its transaction short while there are any
        # (events.service.EventWriter), so that they get the lock between two of its commits.
        self.writes = 0

    async def run_read(self, fn: Callable[[Connection], T], *, snapshot: bool = True) -> T:
        """``fn(connection)`` in one hand-off, in one read transaction unless ``snapshot`` is
        False (db.reader)."""
        return await self._read_runner().run(fn, snapshot=snapshot)

    async def first_row(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of one short statement with ``:name`` parameters (a lookup by key;
        on SQLite right on the event loop, see db.reader)."""
        return await self._read_runner().first_row(sql, params)

    def _read_runner(self) -> ReadRunner:
        if self._reader is None:
            self._reader = ReadRunner(self.engine, SQLITE_BUSY_TIMEOUT_MS)
        return self._reader

    def write_runner(self, preload: Sequence[str] = ()) -> WriteRunner:
        """The database's one ingest writer (db.writer), started on first use with ``preload``."""
        if self._write_runner is None:
            self._write_runner = WriteRunner(self.engine, preload)
        return self._write_runner

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session in one write transaction: committed on success, rolled back on error."""
        self.writes += 1
        try:
            async with AsyncSession(self._writer, expire_on_commit=False) as session:
                async with session.begin():
                    yield session
        finally:
            self.writes -= 1

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with AsyncSession(self.engine, expire_on_commit=False) as session:
            async with session.begin():
                yield session

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    async def dispose(self) -> None:
        if self._write_runner is not None:
            await self._write_runner.close()
        if self._reader is not None:
            await self._reader.close()
        await self.engine.dispose()


def create_database(url: str, *, pool_size: int = 5) -> Database:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=5, pool_pre_ping=False)
        _sqlite_setup(engine)
    else:
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=10)
        _postgres_setup(engine)
    return Database(engine)


def _postgres_setup(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "checkout")
    def _closed_by_server(_dbapi_conn, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        # Instead of pool_pre_ping, which costs three round trips per checkout on asyncpg
        # (BEGIN, a ping, ROLLBACK): a connection the server has closed (a restart,
        # pg_terminate_backend, an idle timeout) is one asyncpg has seen close.  The pool
        # then opens another.
        if record.driver_connection.is_closed():
            raise exc.DisconnectionError("the server closed this connection")
