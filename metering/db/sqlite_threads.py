"""Synchronous engines on the service's SQLite file, for work run outside aiosqlite.

The hot-path readers (db.reader.ReadRunner) hand a whole read to a thread with its own
sqlite3 connections, instead of one aiosqlite hand-off per cursor operation; the ingest
writer (db.sqlite_writer) runs its transactions in a process of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.pool import QueuePool

# How long a connection waits for another's lock before SQLITE_BUSY.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def sqlite_thread_engine(url: URL, *, connections: int, pragmas: Sequence[str]) -> Engine:
    """An engine of ``connections`` pooled sqlite3 connections to ``url``'s file, with these
    pragmas on each.  The driver is in autocommit mode: the caller (or a ``begin`` listener)
    says when transactions begin, not the sqlite3 module."""
    engine = create_engine(url.set(drivername="sqlite"), poolclass=QueuePool, pool_size=connections, max_overflow=0)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None
        for pragma in pragmas:
            dbapi_conn.execute(f"PRAGMA {pragma}")

    return engine
