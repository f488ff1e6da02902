"""Where the ingest transaction's driver SQL runs: one statement's rows or row count, savepoints.

The ingest transaction (events.service ``write_group``, usage.derive) is synchronous code
given a connection by the writer (db.writer) or a caller in a transaction:

- a SQLAlchemy ``Connection`` (``SqlAlchemyStatements``): in the SQLite writer's process,
  straight on its sqlite3 connection (SQLAlchemy's execution context costs ~40 us a
  statement, and a single-event transaction has several); for an in-memory SQLite or a
  caller's session, through ``exec_driver_sql``;
- on PostgreSQL, the writer's own asyncpg connection (db.pg_writer ``PgTransaction``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE


class KeyTaken(Exception):
    """A plain ``INSERT`` (no ``ON CONFLICT``) met a key that is stored already: PostgreSQL's
    unique violation, whichever driver path it came by.  The transaction must be rolled back
    to a savepoint before it runs anything else."""


class Statements(Protocol):
    dialect: str

    def rows(self, sql: str, params: Any) -> list[Any]:
        """The rows of one statement (tuples, or records that unpack like them)."""

    def count(self, sql: str, params: Any) -> int:
        """Run one statement; the rows it changed.  A list of ``params`` runs it once for each.
        ``KeyTaken`` for a unique violation on PostgreSQL."""

    def copy(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int | None:
        """PostgreSQL's ``COPY`` of ``rows`` into ``table``: how many went in, ``KeyTaken`` at a
        stored key (there is no ``ON CONFLICT``); None where this connection cannot (insert them)."""

    def open(self, sql: str) -> None:
        """Run the transaction's first statement (no parameters): with its ``BEGIN``, where
        the connection has not sent that yet."""

    def savepoint(self) -> AbstractContextManager[Any]:
        """Rolled back if the block raises, released if not."""

    def pause(self) -> None:
        """Let the event loop answer other requests, where this transaction runs on it (db.pg_writer)."""


class SqlAlchemyStatements:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        self._raw = conn.connection.driver_connection if conn.dialect.driver == "pysqlite" else None

    def rows(self, sql: str, params: Any) -> list[Any]:
        if self._raw is not None:
            return self._raw.execute(sql, params).fetchall()
        return list(self.conn.exec_driver_sql(sql, params))

    def count(self, sql: str, params: Any) -> int:
        if self._raw is None:  # aiosqlite, or asyncpg in a caller's session
            try:
                return self.conn.exec_driver_sql(sql, params).rowcount
            except IntegrityError as exc:
                if getattr(exc.orig, "sqlstate", None) == UNIQUE_VIOLATION:
                    raise KeyTaken from exc
                raise
        run = self._raw.executemany if isinstance(params, list) else self._raw.execute
        return run(sql, params).rowcount

    def copy(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int | None:
        return None  # through SQLAlchemy: not worth its own driver path

    def open(self, sql: str) -> None:
        self.count(sql, ())  # SQLAlchemy has begun the transaction, or begins it now

    def savepoint(self) -> AbstractContextManager[Any]:
        if self._raw is not None:  # SQLAlchemy's costs ~0.1 ms, more than a small request's insert
            return _driver_savepoint(self._raw)
        return self.conn.begin_nested()

    def pause(self) -> None:
        pass  # in the writer's process, or a caller's transaction: nothing else waits on us here


@contextmanager
def _driver_savepoint(raw: Any) -> Iterator[None]:
    raw.execute("SAVEPOINT ingest")
    try:
        yield
    except BaseException:
        raw.execute("ROLLBACK TO ingest")
        raw.execute("RELEASE ingest")
        raise
    raw.execute("RELEASE ingest")


def statements_for(conn: Any) -> Statements:
    """``conn`` as ``Statements``: a SQLAlchemy ``Connection`` is wrapped, others already are."""
    return SqlAlchemyStatements(conn) if isinstance(conn, Connection) else conn
