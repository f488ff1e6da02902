"""Reading one workspace's billable rows for a time range, through the indexes."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Dialect, Select, and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from metering.core.periods import floor_to
from metering.db import Database
from metering.usage.compute import StoredExtension, StoredInterval
from metering.usage.models import UsageExtension, UsageInterval, still_running

INTERVALS = UsageInterval.__table__
EXTENSIONS = UsageExtension.__table__
_IV_COLS = (INTERVALS.c.workspace_id, INTERVALS.c.deployment_id, INTERVALS.c.sandbox_id,
            INTERVALS.c.template, INTERVALS.c.start, INTERVALS.c.end, INTERVALS.c.lifetime_end)
_EXT_COLS = (EXTENSIONS.c.workspace_id, EXTENSIONS.c.deployment_id, EXTENSIONS.c.sandbox_id,
             EXTENSIONS.c.template, EXTENSIONS.c.time, EXTENSIONS.c.count)


def _for(column, workspace_ids: Sequence[str]):  # type: ignore[no-untyped-def]
    return column == workspace_ids[0] if len(workspace_ids) == 1 else column.in_(workspace_ids)


def intervals_query(workspace_ids: Sequence[str], start: int, end: int, month_start: Any = None) -> Select:
    """Closed pieces starting in the months the range touches, plus the pieces still open.

    Stored pieces never cross a month boundary (usage.derive), so a closed piece that
    overlaps ``[start, end)`` starts in the month of ``start`` or later: both halves are
    one index range per workspace, whatever the workspace's history.  ``month_start``: that
    month's start, given as a parameter of its own when the query is compiled once
    (``_driver_sql``).
    """
    closed = select(*_IV_COLS).where(
        _for(INTERVALS.c.workspace_id, workspace_ids),
        INTERVALS.c.start >= (floor_to(start, "month") if month_start is None else month_start),
        INTERVALS.c.start < end,
        INTERVALS.c.end.is_not(None),
        INTERVALS.c.end > start,
    )
    still_open = still_running(select(*_IV_COLS).where(_for(INTERVALS.c.workspace_id, workspace_ids)), end)
    return closed.union_all(still_open)


def extensions_query(workspace_ids: Sequence[str], start: int, end: int) -> Select:
    return select(*_EXT_COLS).where(
        and_(_for(EXTENSIONS.c.workspace_id, workspace_ids), EXTENSIONS.c.time >= start, EXTENSIONS.c.time < end)
    )


UsageRows = tuple[list[StoredInterval], list[StoredExtension]]


@lru_cache(maxsize=64)
def _driver_sql(dialect: Dialect, workspaces: int) -> tuple[tuple[str, tuple[str, ...], dict[str, Any]], ...]:
    """Both queries for this many workspaces as the driver's SQL, with the order of their
    parameters: built and compiled once, not per query (SQLAlchemy's statement building,
    cache key and parameter processing cost a usage query as much as SQLite's own work)."""
    ids = [bindparam(f"ws{i}") for i in range(workspaces)]
    out = []
    start, end = bindparam("start"), bindparam("end")
    for query in (intervals_query(ids, start, end, bindparam("month_start")),  # type: ignore[arg-type]
                  extensions_query(ids, start, end)):  # type: ignore[arg-type]
        compiled = query.compile(dialect=dialect)
        out.append((str(compiled), tuple(compiled.positiontup or ()), compiled.params))  # params: the constants
    return tuple(out)


def usage_rows_of(conn: Connection | Session, workspace_ids: Sequence[str], start: int, end: int) -> dict[str, UsageRows]:
    """The billable rows of some workspaces, two queries in all (billing runs ask for many)."""
    if isinstance(conn, Session):
        conn = conn.connection()
    values = {f"ws{i}": ws for i, ws in enumerate(workspace_ids)}
    values.update(start=start, end=end, month_start=floor_to(start, "month"))
    rows: dict[str, UsageRows] = {}
    for (sql, names, constants), make, side in zip(_driver_sql(conn.dialect, len(workspace_ids)),
                                                   (StoredInterval, StoredExtension), (0, 1)):
        given = {**constants, **values}
        for row in conn.exec_driver_sql(sql, tuple(given[name] for name in names)).all():
            rows.setdefault(row[0], ([], []))[side].append(make(*row))
    return rows


# PostgreSQL: the rows a usage query reads are turned into objects this many at a time.
STREAM_ROWS = 1_000


async def read_usage_rows(db: Database, workspace_id: str, start: int, end: int) -> UsageRows:
    """One workspace's rows in a read transaction of their own (a usage query).

    On PostgreSQL SQLAlchemy makes the rows on the event loop (a few microseconds each, the
    greenlet bridge): the 10,000 of a big query held the loop for tens of milliseconds at
    once.  They are streamed instead, ``STREAM_ROWS`` at a time, with the loop free between.
    (On a SQLite file the read runs on a reader thread, db.reader.)
    """
    if db.is_sqlite:
        rows = await db.run_read(lambda conn: usage_rows_of(conn, [workspace_id], start, end))
        return rows.get(workspace_id, ([], []))
    intervals: list[StoredInterval] = []
    extensions: list[StoredExtension] = []
    async with db.engine.connect() as conn, conn.begin():
        for query, into, make in ((intervals_query([workspace_id], start, end), intervals, StoredInterval),
                                  (extensions_query([workspace_id], start, end), extensions, StoredExtension)):
            result = await conn.stream(query.execution_options(yield_per=STREAM_ROWS))
            async for part in result.partitions():
                into.extend(make(*row) for row in part)
    return intervals, extensions


async def load_usage_rows(session: AsyncSession, workspace_id: str, start: int, end: int) -> UsageRows:
    """One workspace's rows in the caller's transaction."""
    return (await load_usage_rows_of(session, [workspace_id], start, end)).get(workspace_id, ([], []))


async def load_usage_rows_of(
    session: AsyncSession, workspace_ids: Sequence[str], start: int, end: int
) -> dict[str, UsageRows]:
    return await session.run_sync(lambda sync_session: usage_rows_of(sync_session, workspace_ids, start, end))
