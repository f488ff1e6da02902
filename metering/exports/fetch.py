"""Rows straight from the driver, a chunk at a time: the read path of the bulk export.

SQLAlchemy wraps every row it hands over in a Row object, which for a million-row usage
export cost more than reading the rows did. Here the export borrows a pooled connection
and reads through its driver instead: a sqlite3 cursor (through aiosqlite) or an asyncpg
cursor, ``size`` rows per fetch, each chunk a list of plain tuples that becomes one Arrow
record batch (``columnar.batch_of_rows``).

The rows are read inside the transaction ``snapshot`` begins through SQLAlchemy, so that
SQLAlchemy still ends it (or drops the connection) however the export ends, abandoned
midway included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pyarrow as pa
from sqlalchemy import Select, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import sqltypes

from metering.db import Database


def query_schema(query: Select) -> pa.Schema:
    """The Arrow types of a query's columns: text and integers are all the usage tables hold."""

    def arrow(column: Any) -> pa.DataType:
        stored = column.type.impl_instance if isinstance(column.type, TypeDecorator) else column.type
        if isinstance(stored, sqltypes.Integer):
            return pa.int64()
        if isinstance(stored, sqltypes.String):
            return pa.string()
        raise TypeError(f"no Arrow type for {column.name} ({column.type})")

    return pa.schema([pa.field(c.name, arrow(c)) for c in query.selected_columns])


def _driver_sql(query: Select, dialect: Dialect) -> tuple[str, list[Any]]:
    """The query as the driver takes it: its SQL with positional parameters (``?`` or ``$n``)."""
    compiled = query.compile(dialect=dialect)
    return str(compiled), [compiled.params[name] for name in compiled.positiontup or ()]


class Reader:
    """Chunks of tuples for each query, inside one read transaction on one connection."""

    def __init__(self, driver: Any, dialect: Dialect) -> None:
        self.driver = driver
        self.dialect = dialect

    async def chunks(self, query: Select, size: int) -> AsyncIterator[list[tuple[Any, ...]]]:
        """Close it when done early (``contextlib.aclosing``): the cursor is closed with it."""
        sql, params = _driver_sql(query, self.dialect)
        if self.dialect.name == "sqlite":
            cursor = await self.driver.execute(sql, params)
            try:
                while rows := await cursor.fetchmany(size):
                    yield rows
            finally:
                await cursor.close()
        else:  # an asyncpg cursor lives until the transaction ends: nothing to close
            cursor = await self.driver.cursor(sql, *params)
            while rows := await cursor.fetch(size):
                yield rows  # asyncpg Records: sequences, as tuples are


@asynccontextmanager
async def snapshot(db: Database) -> AsyncIterator[AsyncConnection]:
    """One read transaction for a whole export: REPEATABLE READ on PostgreSQL, a WAL
    snapshot on SQLite (taken at the first read), so every part sees the same data."""
    async with db.engine.connect() as conn:
        if not db.is_sqlite:
            await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            yield conn


@asynccontextmanager
async def reader(db: Database) -> AsyncIterator[Reader]:
    async with snapshot(db) as conn:
        if not db.is_sqlite:
            # SQLAlchemy's asyncpg adapter sends BEGIN with its first statement: this one,
            # so that the driver's cursors below read inside that transaction.
            await conn.exec_driver_sql("SELECT 1")
        yield Reader((await conn.get_raw_connection()).driver_connection, conn.dialect)
