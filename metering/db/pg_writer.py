"""The ingest writer on PostgreSQL: whole transactions on asyncpg connections of its own.

Through the async engine an ingest transaction paid, besides its statements, a pool
checkout, SQLAlchemy's connection, transaction and result machinery around each statement
(about twice asyncpg's own CPU), and a round trip of its own for ``BEGIN``; the server's
CPU, shared by every request, set the latency of single events.  Here the transaction's
function runs in a greenlet, as ``AsyncConnection.run_sync`` runs it, but each statement goes
to asyncpg directly (``PgTransaction``), and ``BEGIN`` goes with the transaction's first
statement (``Statements.open``) in one round trip.

``CONNECTIONS`` transactions at a time, each on a connection of its own: ingest transactions
serialize only their derivation (events.service ``PG_INGEST_SERIAL``), so the next one's
events go in while the one before derives and commits, and PostgreSQL's work overlaps ours.
Two transactions that insert the same events in opposite orders wait on each other's keys:
PostgreSQL finds the deadlock and fails one, which is run again (``DEADLOCK_TRIES``; then
503: nothing of it was stored, and sent again it goes through).

A connection the server closed between transactions is replaced (db.pg_connection), and a
transaction whose first round trip found it gone is run again on a new one.  If it is lost
later, nothing was committed, or (lost in the ``COMMIT``) nobody knows: the requests get a
503 and are not acknowledged; sent again, their stored events count as duplicates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only, greenlet_spawn

from metering.db.pg_connection import GONE, OwnConnection
from metering.db.statements import KeyTaken
from metering.errors import Unavailable

T = TypeVar("T")
CONNECTIONS = 2
DEADLOCK_TRIES = 3


class PgTransaction:
    """``Statements`` (db.statements) on an asyncpg connection, from inside the writer's greenlet."""

    dialect = "postgresql"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.begun = False
        self.answered = False  # a round trip of this transaction has come back
        self._savepoints = 0

    def _run(self, call: Any) -> Any:
        result = await_only(call)
        self.answered = True
        return result

    def _begin(self) -> None:
        if not self.begun:
            self._run(self.conn.execute("BEGIN"))
            self.begun = True

    def rows(self, sql: str, params: Any) -> list[Any]:
        self._begin()
        return self._run(self.conn.fetch(sql, *params))

    def count(self, sql: str, params: Any) -> int:
        self._begin()
        try:
            status = self._run(self.conn.execute(sql, *params))  # "INSERT 0 3", "DELETE 2", "SELECT 1"
        except asyncpg.UniqueViolationError as exc:
            raise KeyTaken from exc
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    def copy(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        self._begin()
        try:
            status = self._run(self.conn.copy_records_to_table(table, records=rows, columns=list(columns)))
        except asyncpg.UniqueViolationError as exc:
            raise KeyTaken from exc
        return int(status.rsplit(" ", 1)[-1])  # "COPY 300"

    def open(self, sql: str) -> None:
        if self.begun:
            self.count(sql, ())
            return
        # Without parameters asyncpg sends the simple query protocol, which takes several statements.
        self._run(self.conn.execute(f"BEGIN; {sql}"))
        self.begun = True

    def pause(self) -> None:
        await_only(asyncio.sleep(0))

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self._savepoints += 1
        name = f"ingest_{self._savepoints}"
        self.count(f"SAVEPOINT {name}", ())
        try:
            yield
        except BaseException:
            self.count(f"ROLLBACK TO SAVEPOINT {name}", ())
            raise
        self.count(f"RELEASE SAVEPOINT {name}", ())


class PgWriter:
    """``await run(fn)``: ``fn(PgTransaction)`` in one transaction, committed if it returns."""

    def __init__(self, engine: AsyncEngine, connections: int = CONNECTIONS) -> None:
        self._own = [OwnConnection(engine) for _ in range(connections)]
        self._users = [0] * connections  # transactions running or waiting, per connection

    async def run(self, fn: Callable[[PgTransaction], T]) -> T:
        # The connection with the fewest users: with more callers than connections (the HTTP
        # and the stream's writers), both connections stay busy.
        i = min(range(len(self._own)), key=self._users.__getitem__)
        own = self._own[i]
        self._users[i] += 1
        try:
            async with own.lock:
                return await self._run_retrying(own, fn)
        finally:
            self._users[i] -= 1

    async def _run_retrying(self, own: OwnConnection, fn: Callable[[PgTransaction], T]) -> T:
        for deadlocks in range(DEADLOCK_TRIES):
            try:
                return await self._run_once(own, fn)
            except asyncpg.DeadlockDetectedError as exc:  # rolled back: nothing of it is stored
                if deadlocks == DEADLOCK_TRIES - 1:
                    raise Unavailable("this request's events waited on another request's, again and again; none "
                                      "was stored, send it again") from exc
        raise AssertionError("unreachable")

    async def _run_once(self, own: OwnConnection, fn: Callable[[PgTransaction], T]) -> T:
        for last_try in (False, True):
            tx = None
            try:
                tx = PgTransaction(await own.get())
                return await self._transaction(own, tx, fn)
            except GONE as exc:
                own.drop()
                # Gone before its first answer, nothing of it reached the database: once more.
                if last_try or (tx is not None and tx.answered):
                    raise _lost() from exc
        raise AssertionError("unreachable")

    async def _transaction(self, own: OwnConnection, tx: PgTransaction, fn: Callable[[PgTransaction], T]) -> T:
        try:
            result = await greenlet_spawn(fn, tx)
            if tx.begun:
                await tx.conn.execute("COMMIT")
            return result
        except GONE:
            raise
        except Exception:
            if tx.begun:
                await _rollback(own, tx.conn)
            raise
        except BaseException:  # cancelled, maybe mid-statement: closed, the server rolls it back
            own.drop()
            raise

    async def close(self) -> None:
        for own in self._own:
            await own.close()


async def _rollback(own: OwnConnection, conn: asyncpg.Connection) -> None:
    try:
        await conn.execute("ROLLBACK")
    except Exception:  # noqa: BLE001 - the connection is unusable: a new one next time
        own.drop()


def _lost() -> Unavailable:
    return Unavailable("the database connection was lost while storing this request; it was not acknowledged, "
                       "send it again (events stored already count as duplicates)")
