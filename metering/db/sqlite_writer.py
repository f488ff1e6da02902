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
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, RootTransaction, event, make_url

from metering.db.sqlite_threads import SQLITE_BUSY_TIMEOUT_MS, sqlite_thread_engine
from metering.errors import Unavailable

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
        self._open: _Open | None = None  # a transaction sent in stages, until its commit

    def run(self, fn: Callable[[Connection], T]) -> T:
        if self._open is not None:
            raise RuntimeError("ingest writer: a transaction is open in stages; only its commit may come")
        with self.connection.begin():
            result = fn(self.connection)
        self.checkpointer.poke()
        return result

    def stage(self, load: Callable[[], Callable[[Connection], Any]]) -> None:
        """Run the function ``load`` gives in the open transaction, beginning one if none is;
        its result (or the first failure, after which nothing more runs) waits for ``commit``."""
        if self._open is None:
            self._open = _Open(self.connection.begin())
        staged = self._open
        staged.parts += 1
        if staged.failure is None:
            try:
                staged.results.append(load()(self.connection))
            except Exception as exc:  # noqa: BLE001 - the commit answers it
                staged.failure = exc

    def commit(self, fn: Callable[[Connection, list[Any]], T], parts: int) -> T:
        """End the open transaction: ``fn(connection, results of its stages)``, then commit.
        Rolled back instead if a stage failed, or if it holds fewer than the ``parts`` stages
        the server sent (this process started after some of them)."""
        staged, self._open = self._open, None
        if staged is None:
            staged = _Open(self.connection.begin())
        try:
            if staged.failure is not None:
                raise staged.failure
            if staged.parts != parts:
                raise Unavailable(f"the ingest writer restarted while this transaction was sent ({staged.parts} "
                                  f"of its {parts} requests reached it); nothing of it was stored, send it again")
            result = fn(self.connection, staged.results)
        except BaseException:
            staged.transaction.rollback()
            raise
        staged.transaction.commit()
        self.checkpointer.poke()
        return result

    def rollback(self) -> None:
        """End the open transaction, if there is one, storing nothing of it."""
        staged, self._open = self._open, None
        if staged is not None:
            staged.transaction.rollback()

    def close(self) -> None:
        self.checkpointer.close()
        self.connection.close()
        self.engine.dispose()


@dataclass
class _Open:
    """A transaction the server sends in stages (SqliteWriter.stage), until its commit."""
    transaction: RootTransaction
    results: list[Any] = field(default_factory=list)
    parts: int = 0
    failure: Exception | None = None


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
