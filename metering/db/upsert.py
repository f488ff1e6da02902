"""Dialect-aware ``INSERT ... ON CONFLICT DO NOTHING``, and bulk statements for hot paths.

``insert_ignore`` is the SQLAlchemy Core construct, fine for a few rows.  The ingest path
moves thousands of rows per request; compiling Core statements for each of them costs more
than the database work, so ``BulkSQL`` renders driver SQL once per shape and runs it on the
driver (db.statements):

- SQLite: multi-row ``VALUES (?, ...), (?, ...)`` with one flat parameter tuple, in chunks
  that stay under SQLite's bound-variable limit;
- PostgreSQL (asyncpg): one statement whatever the row count, its rows sent as one JSON
  array (encoded by msgspec in C) and unpacked by ``jsonb_array_elements``.  asyncpg
  prepares it once per connection.  (Array parameters with ``unnest`` cost the client about
  five times more CPU: asyncpg inspects every element of every array in Python.)  Rows that
  should all be new (``insert_new``) go by binary ``COPY`` on the writer's connection instead:
  parsing the JSON array was ~40% of PostgreSQL's work for an events insert.

The row count of an insert is the number of rows inserted (skipped conflicts not counted).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from itertools import chain
from typing import Any

import msgspec

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

from metering.db.statements import Statements, statements_for

# SQLite allows 32,766 bound variables per statement; keep well below it.
SQLITE_MAX_VARIABLES = 8_000


def insert_ignore(table: Table, dialect: str, conflict_columns: Sequence[str]):  # type: ignore[no-untyped-def]
    """An insert that skips rows whose ``conflict_columns`` already exist.

    Executed with a list of parameter dicts and ``RETURNING``, SQLAlchemy renders it
    as multi-row ``VALUES`` batches ("insertmanyvalues"), not one statement per row.
    """
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns))


def _quote(name: str) -> str:
    return f'"{name}"'


_encode_json = msgspec.json.Encoder().encode


def _json_rows(rows: Sequence[Sequence[Any]]) -> str:
    return _encode_json(rows).decode()


def _pg_type(table: Table, column: str) -> str:
    return table.c[column].type.compile(dialect=postgresql.dialect()).split("(", 1)[0].lower()  # varchar(128) -> varchar


@lru_cache(maxsize=64)
def _pg_rows_select(table: Table, columns: tuple[str, ...]) -> str:
    """``SELECT`` the rows of the JSON array parameter $1, one typed column per position."""
    fields = ", ".join(f"(r->>{i})::{_pg_type(table, c)}" for i, c in enumerate(columns))
    return f"SELECT {fields} FROM jsonb_array_elements($1::jsonb) AS r"


class BulkSQL:
    """Bulk ``INSERT`` (optionally ``ON CONFLICT``) and keyed ``SELECT`` / ``DELETE`` for one
    connection's dialect, run on that connection (db.statements)."""

    def __init__(self, conn: Any) -> None:
        self.run: Statements = statements_for(conn)
        self.is_pg = self.run.dialect == "postgresql"

    def rows(self, stmt: str, params: Any) -> list[Any]:
        return self.run.rows(stmt, params)

    def execute_all(self, chunks: list[tuple[str, Any]]) -> int:
        """Run ``(sql, parameters)`` pairs (as the methods below make them); the rows they changed."""
        return sum(self.run.count(stmt, params) for stmt, params in chunks)

    def execute_together(self, chunks: list[tuple[str, Any]]) -> None:
        """Run statements none of which reads the rows another one writes.

        On PostgreSQL they go as one statement, each a data-modifying ``WITH`` query: one round
        trip instead of one each.  They all see the tables as they were before it (a ``DELETE``
        does not see the rows an ``INSERT`` beside it adds), and each row may be changed by
        one of them only.  Elsewhere they run one after the other, in order.
        """
        if not self.is_pg or len(chunks) < 2:
            self.execute_all(chunks)
            return
        stmt = _pg_together_sql(tuple(stmt for stmt, _ in chunks))
        self.run.count(stmt, tuple(param for _, (param,) in chunks))

    # -- inserts -----------------------------------------------------------------------

    def insert_chunks(
        self, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]], on_conflict: str = "",
    ) -> list[tuple[str, Any]]:
        """``(sql, parameters)`` pairs that insert ``rows`` (tuples in ``columns`` order).

        ``on_conflict`` is the clause after the values, e.g.
        ``ON CONFLICT (source, event_id) DO NOTHING``.
        """
        if not rows:
            return []
        columns = tuple(columns)
        if self.is_pg:
            return [(_pg_insert_sql(table, columns, on_conflict), (_json_rows(rows),))]
        per_chunk = max(1, SQLITE_MAX_VARIABLES // len(columns))
        out = []
        for lo in range(0, len(rows), per_chunk):
            chunk = rows[lo : lo + per_chunk]
            sql = _sqlite_insert_sql(table.name, columns, len(chunk), on_conflict)
            out.append((sql, tuple(chain.from_iterable(chunk))))
        return out

    def insert_new(self, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """Insert ``rows``, none of which should be stored already: on PostgreSQL ``KeyTaken``
        at the first that is.  By ``COPY`` where the connection can (db.pg_writer), which
        costs PostgreSQL ~3 us an event less than the JSON array (2026-12-05, BENCHMARKS)."""
        copied = self.run.copy(table.name, columns, rows) if self.is_pg else None
        if copied is not None:
            return copied
        return self.execute_all(self.insert_chunks(table, columns, rows))

    # -- updates -----------------------------------------------------------------------

    def update_chunks(
        self, table: Table, set_columns: Sequence[str], key_columns: Sequence[str], rows: Sequence[Sequence[Any]],
        tail: str = "",
    ) -> list[tuple[str, Any]]:
        """``(sql, parameters)`` pairs that set ``set_columns`` of the row whose ``key_columns``
        match, for each of ``rows`` (tuples: the new values, then the key); ``tail`` is
        appended to the condition (``AND ...``)."""
        if not rows:
            return []
        if self.is_pg:
            return [(_pg_update_sql(table, tuple(set_columns), tuple(key_columns), tail), (_json_rows(rows),))]
        sets = ", ".join(f"{_quote(c)} = ?" for c in set_columns)
        where = " AND ".join(f"{_quote(c)} = ?" for c in key_columns)
        return [(f"UPDATE {_quote(table.name)} SET {sets} WHERE {where} {tail}", [tuple(r) for r in rows])]

    # -- lookups by a composite key ----------------------------------------------------

    def keyed_chunks(
        self, table: Table, head: str, key_columns: Sequence[str], keys: Sequence[Sequence[Any]], tail: str = "",
    ) -> list[tuple[str, Any]]:
        """``head`` (``SELECT cols FROM t`` or ``DELETE FROM t``) restricted to rows whose
        ``key_columns`` are one of ``keys``; ``tail`` is appended (``AND ...``, ``FOR UPDATE``)."""
        if not keys:
            return []
        key_columns = tuple(key_columns)
        cols = ", ".join(_quote(c) for c in key_columns)
        if self.is_pg:
            sql = f"{head} WHERE ({cols}) IN ({_pg_rows_select(table, key_columns)}) {tail}"
            return [(sql, (_json_rows(keys),))]
        per_chunk = max(1, SQLITE_MAX_VARIABLES // len(key_columns))
        out = []
        for lo in range(0, len(keys), per_chunk):
            chunk = keys[lo : lo + per_chunk]
            out.append((_sqlite_keyed_sql(head, cols, len(key_columns), len(chunk), tail),
                        tuple(chain.from_iterable(chunk))))
        return out

    def for_each_key(
        self, table: Table, head: str, key_columns: Sequence[str], keys: Sequence[Sequence[Any]], tail: str = "",
    ) -> list[tuple[str, Any]]:
        """``head`` restricted to ``key_columns = key``, run once per key (``executemany``).

        For a few keys on a big table, when an index covers only the key's leading columns:
        each key is an equality search on it.  On PostgreSQL it is ``keyed_chunks``' one
        JSON array instead, which ``execute_together`` can join: its planner makes the same
        per-key searches of that, given a big table or the ingest transaction's settings
        (events.service ``PG_INGEST_PLANS``).
        """
        if not keys:
            return []
        if self.is_pg:
            return self.keyed_chunks(table, head, key_columns, keys, tail)
        where = " AND ".join(f"{_quote(c)} = ?" for c in key_columns)
        return [(f"{head} WHERE {where} {tail}", [tuple(k) for k in keys])]


@lru_cache(maxsize=256)
def _sqlite_insert_sql(table: str, columns: tuple[str, ...], n: int, on_conflict: str) -> str:
    row = "(" + ", ".join("?" * len(columns)) + ")"
    names = ", ".join(_quote(c) for c in columns)
    return f"INSERT INTO {_quote(table)} ({names}) VALUES {', '.join([row] * n)} {on_conflict}"


@lru_cache(maxsize=256)
def _sqlite_keyed_sql(head: str, cols: str, width: int, n: int, tail: str) -> str:
    # ``IN (SELECT * FROM (VALUES ...))``, not ``IN (VALUES ...)``: SQLite searches an index on
    # all the key's columns only for the former.  For the latter it scans the whole table.
    row = "(" + ", ".join("?" * width) + ")"
    return f"{head} WHERE ({cols}) IN (SELECT * FROM (VALUES {', '.join([row] * n)})) {tail}"


@lru_cache(maxsize=64)
def _pg_insert_sql(table: Table, columns: tuple[str, ...], on_conflict: str) -> str:
    names = ", ".join(_quote(c) for c in columns)
    return f"INSERT INTO {_quote(table.name)} ({names}) {_pg_rows_select(table, columns)} {on_conflict}"


@lru_cache(maxsize=16)
def _pg_update_sql(table: Table, set_columns: tuple[str, ...], key_columns: tuple[str, ...], tail: str) -> str:
    """Each JSON row finds its row by key (a subquery per row: an index search), then the
    rows are updated by primary key.  As a join of the table with the JSON rows, the planner
    took the table's side first whenever it thought few rows matched ``tail`` (the open
    intervals, counted as one while the statistics were old), and compared every such row
    with every JSON row: 190 ms for 1,000 extensions among 1,000 open intervals."""
    [pk] = [c.name for c in table.primary_key.columns]
    columns = (*set_columns, *key_columns)
    fields = ", ".join(f"(r->>{i})::{_pg_type(table, c)} AS v{i}" for i, c in enumerate(columns))
    sets = ", ".join(f"{_quote(c)} = v.v{i}" for i, c in enumerate(set_columns))
    match = " AND ".join(f"k.{_quote(c)} = j.v{i}" for i, c in enumerate(columns) if i >= len(set_columns))
    found = f"(SELECT k.{_quote(pk)} FROM {_quote(table.name)} AS k WHERE {match} {tail}) AS found"
    return (f"UPDATE {_quote(table.name)} AS t SET {sets} FROM (SELECT j.*, {found} FROM "
            f"(SELECT {fields} FROM jsonb_array_elements($1::jsonb) AS r) AS j) AS v WHERE t.{_quote(pk)} = v.found")


_FIRST_PARAM = re.compile(r"\$1(?!\d)")


@lru_cache(maxsize=128)
def _pg_together_sql(statements: tuple[str, ...]) -> str:
    """PostgreSQL statements of one parameter each (``$1``, the JSON rows) as one statement."""
    queries = ", ".join(f"q{n} AS ({_FIRST_PARAM.sub(f'${n}', stmt)})" for n, stmt in enumerate(statements, 1))
    return f"WITH {queries} SELECT 1"
