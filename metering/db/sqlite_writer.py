"""Write transactions on one SQLite connection, with the WAL's checkpoints kept off its commits.

This is the synchronous core of the ingest writer; it runs in the writer's own process
(db.write_process).  Same pragmas as db.engine (WAL, ``synchronous=FULL``, ``BEGIN
IMMEDIATE``), plus a page cache big enough for a 10,000-event transaction, and savepoints
kept in memory.  Its commits do not checkpoint the WAL (copy it back into the database file
and fsync that): a background thread does, at most every ``CHECKPOINT_SECONDS``, while the
next transaction is being written (and a commit itself once the WAL is long, see
``WAL_RESTART_FRAMES``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Connection, event, make_url

from metering.db.sqlite_threads import SQLITE_BUSY_TIMEOUT_MS, sqlite_thread_engine

T = TypeVar("T")

# The writer's page cache (KiB, negative for PRAGMA cache_size): a 10,000-event transaction
# dirties tens of MiB of pages; with SQLite's 2 MiB default it spills them to the WAL (and
# reads them back) before it commits.
SQLITE_WRITER_CACHE_KIB = -131_072
CHECKPOINT_SECONDS = 0.25
# A background checkpoint never catches up with a writer that never pauses (the transaction
# written meanwhile is always left), and SQLite starts the WAL over only once all of it is
# checkpointed: a commit that leaves the WAL past this many frames (16 MiB) checkpoints it
# (SQLite's own wal_autocheckpoint, which counts the frames exactly), so the next
# transaction starts the WAL over instead of growing it without end.  The background
# checkpoints have copied most of it by then.
WAL_RESTART_FRAMES = 4096
# A group's events are inserted in a savepoint (events.service._insert_together), and SQLite
# copies each page the savepoint changes into a sub-journal first, which spills to a temporary
# file past 64 KiB: as many page writes again as the commit's.  In memory it is a copy: at
# 100-event requests from 8 clients the writer's CPU per event went from 33-38 to 25-28 us
# (when the group's derivation was written in the savepoint too).
# (At most the pages of one 10,000-event group, tens of MiB, while its transaction lasts.)
TEMP_STORE = "temp_store=MEMORY"


class SqliteWriter:
    """``run(fn)``: ``fn(connection)`` in one ``BEGIN IMMEDIATE`` transaction on the file at ``path``.

    Every transaction runs on one connection, kept open: checking a connection out of the
    pool and back in for each cost more than a single-event transaction's statements.
    """

    def __init__(self, path: str) -> None:
        self.engine = sqlite_thread_engine(make_url(f"sqlite:///{path}"), connections=1, pragmas=(
            f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}", "journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON",
            f"cache_size={SQLITE_WRITER_CACHE_KIB}", f"wal_autocheckpoint={WAL_RESTART_FRAMES}", TEMP_STORE))
        event.listen(self.engine, "begin", _begin_immediate)
        self.connection = self.engine.connect()
        self.checkpointer = _Checkpointer(path)

    def run(self, fn: Callable[[Connection], T]) -> T:
        with self.connection.begin():
            result = fn(self.connection)
        self.checkpointer.poke()
        return result

    def close(self) -> None:
        self.checkpointer.close()
        self.connection.close()
        self.engine.dispose()


class _Checkpointer:
    """``PRAGMA wal_checkpoint(PASSIVE)`` on a connection and thread of its own (it does not block writers)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
        self._pending: Future[None] | None = None
        self._last = 0.0
        self._conn: sqlite3.Connection | None = None

    def poke(self) -> None:
        now = time.monotonic()
        if (self._pending is None or self._pending.done()) and now - self._last >= CHECKPOINT_SECONDS:
            self._last = now
            self._pending = self.thread.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def close(self) -> None:
        self.thread.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()


def _begin_immediate(conn) -> None:  # type: ignore[no-untyped-def]
    # Take the write lock up front (see db.engine); on the driver's connection, which costs
    # a tenth of an SQLAlchemy statement.
    conn.connection.driver_connection.execute("BEGIN IMMEDIATE")
