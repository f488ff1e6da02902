"""Synchronous engines on the service's SQLite file, for work run on threads of our own.

The ingest writer (db.upsert.WriteRunner) and the hot-path readers (db.reader.ReadRunner)
each hand a whole transaction to a thread with its own sqlite3 connections, instead of one
aiosqlite hand-off per cursor operation.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.pool import QueuePool


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
