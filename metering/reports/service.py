"""Writing daily usage reports: which (workspace, day) pairs are due, and writing one.

A report is written files first, then its row (unique per workspace, kind and day) with
its ``report.created`` webhook in the same transaction. A crash between the two leaves
files without a row; the next pass rewrites them and inserts the row. So a pass can stop
anywhere and the next one finishes it without duplicates.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from sqlalchemy import Select, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from metering.core.periods import DAY_US, floor_to
from metering.core.pricing import PriceBook
from metering.db import Database, insert_ignore
from metering.db.base import in_slices
from metering.db.base import now_us as current_time_us
from metering.events.models import IS_RUN_EVENT, Event
from metering.invoices.credit import carried_on_day
from metering.logging import get_logger
from metering.reports.files import day_name, relative_paths, resolve, write_atomic
from metering.reports.models import Report
from metering.reports.render import KIND, RUN_STATUSES, build_content, render_csv, render_json
from metering.settings import Settings
from metering.usage.compute import aggregate
from metering.usage.models import UsageExtension, UsageInterval, still_running
from metering.spend.overruns import overrun_pieces
from metering.usage.service import load_usage_rows
from metering.webhooks.outbox import enqueue

REPORTS = Report.__table__
EVENTS = Event.__table__
INTERVALS = UsageInterval.__table__
EXTENSIONS = UsageExtension.__table__
RUN_TYPES = {f"run.{status}": status for status in RUN_STATUSES}
log = get_logger(__name__)

# Distinct workspaces by a loose index scan: one index seek per workspace instead of a
# scan of every event (events has indexes led by workspace_id, none by type or time).
_WORKSPACES = text(
    "WITH RECURSIVE ws(id) AS ("
    " SELECT MIN(workspace_id) FROM events"
    " UNION ALL"
    " SELECT (SELECT MIN(e.workspace_id) FROM events e WHERE e.workspace_id > ws.id) FROM ws WHERE ws.id IS NOT NULL"
    ") SELECT id FROM ws WHERE id IS NOT NULL"
)


def report_id(workspace_id: str, kind: str, start: int) -> str:
    """Derived from the unique key: every attempt at one report names it the same."""
    digest = hashlib.sha256(f"{workspace_id}\x00{kind}\x00{start}".encode()).hexdigest()
    return f"rep_{digest[:24]}"


def _add_days(found: set[tuple[str, int]], workspace_id: str, start: int, end: int) -> None:
    day = floor_to(start, "day")
    while day < end:
        found.add((workspace_id, day))
        day += DAY_US


async def active_days(session: AsyncSession, start: int, end: int) -> set[tuple[str, int]]:
    """(workspace, day start) pairs in ``[start, end)`` (day aligned) with usage or run events."""
    found: set[tuple[str, int]] = set()
    # Closed pieces never cross a month boundary (usage.derive): one range on the start index.
    closed = select(INTERVALS.c.workspace_id, INTERVALS.c.start, INTERVALS.c.end).where(
        INTERVALS.c.start >= floor_to(start, "month"), INTERVALS.c.start < end,
        INTERVALS.c.end.is_not(None), INTERVALS.c.end > start,
    )
    for ws, s, e in await session.execute(closed):
        _add_days(found, ws, max(s, start), min(e, end))
    day_of_ext = EXTENSIONS.c.time - EXTENSIONS.c.time % DAY_US
    extensions = select(EXTENSIONS.c.workspace_id, day_of_ext).where(
        EXTENSIONS.c.time >= start, EXTENSIONS.c.time < end).distinct()
    found.update((ws, day) for ws, day in await session.execute(extensions))

    workspaces = list((await session.execute(_WORKSPACES)).scalars())
    day_of_event = EVENTS.c.time - EVENTS.c.time % DAY_US
    for chunk in in_slices(workspaces):
        still_open = still_running(select(INTERVALS.c.workspace_id, INTERVALS.c.start).where(
            INTERVALS.c.workspace_id.in_(chunk)), end)
        for ws, s in await session.execute(still_open):
            _add_days(found, ws, max(s, start), end)
        runs = select(EVENTS.c.workspace_id, day_of_event).where(
            EVENTS.c.workspace_id.in_(chunk), IS_RUN_EVENT,
            EVENTS.c.time >= start, EVENTS.c.time < end,
        ).distinct()
        found.update((ws, day) for ws, day in await session.execute(runs))
    return found


async def earliest_activity(session: AsyncSession) -> int | None:
    """When the first usage or run happened; only needed before the first report pass."""
    candidates = [
        (await session.execute(select(func.min(INTERVALS.c.start)))).scalar(),
        (await session.execute(select(func.min(EXTENSIONS.c.time)))).scalar(),
        # No index serves this one: it is read once, when there is no watermark yet.
        (await session.execute(select(func.min(EVENTS.c.time)).where(IS_RUN_EVENT))).scalar(),
    ]
    present = [c for c in candidates if c is not None]
    return min(present) if present else None


async def existing_reports(session: AsyncSession, start: int, end: int) -> set[tuple[str, int]]:
    rows = await session.execute(select(REPORTS.c.workspace_id, REPORTS.c.start).where(
        REPORTS.c.kind == KIND, REPORTS.c.start >= start, REPORTS.c.start < end))
    return {(ws, s) for ws, s in rows}


def run_counts_query(workspace_id: str, start: int, end: int) -> Select:
    """Run events of one workspace in ``[start, end)`` by type, through the partial ix_events_runs."""
    return select(EVENTS.c.type, func.count()).where(
        EVENTS.c.workspace_id == workspace_id, IS_RUN_EVENT, EVENTS.c.time >= start, EVENTS.c.time < end,
    ).group_by(EVENTS.c.type)


async def run_counts(session: AsyncSession, workspace_id: str, start: int, end: int) -> dict[str, int]:
    rows = await session.execute(run_counts_query(workspace_id, start, end))
    return {RUN_TYPES[type_]: count for type_, count in rows}


async def write_daily_report(
    db: Database, settings: Settings, book: PriceBook, workspace_id: str, day_start: int,
) -> bool:
    """Write one workspace's report for the UTC day starting at ``day_start``.

    True if this call created it, False if it already existed. Safe to repeat.
    """
    start, end = day_start, day_start + DAY_US
    async with db.read() as session:
        intervals, extensions = await load_usage_rows(session, workspace_id, start, end)
        runs = await run_counts(session, workspace_id, start, end)
        carried = await carried_on_day(session, workspace_id, start, end)
    lifetime = settings.lifetime.policy
    buckets = aggregate(intervals, extensions, book, start=start, end=end, as_of=end, lifetime=lifetime,
                        group_by=("deployment", "template"))
    rid = report_id(workspace_id, KIND, start)
    overruns = overrun_pieces(intervals, book, start, end, end, lifetime)
    content = build_content(rid, workspace_id, start, end, buckets, runs, carried, overruns)
    json_rel, csv_rel = relative_paths(workspace_id, start)

    def write_files() -> None:
        write_atomic(resolve(settings.reports_dir, json_rel), render_json(content))
        write_atomic(resolve(settings.reports_dir, csv_rel), render_csv(content))

    await asyncio.to_thread(write_files)
    now = current_time_us()
    row = {"id": rid, "workspace_id": workspace_id, "kind": KIND, "start": start, "end": end,
           "json_path": json_rel, "csv_path": csv_rel, "created_at": now}
    async with db.write() as session:
        stmt = insert_ignore(REPORTS, db.dialect, ["workspace_id", "kind", "start"]).values(**row)
        created = (await session.execute(stmt.returning(REPORTS.c.id))).first() is not None
        if created:
            # Same transaction: the webhook exists if and only if the report row does.
            await enqueue(session, "report.created", {
                "report_id": rid, "kind": KIND, "workspace_id": workspace_id, "day": content["day"],
                "start": content["start"], "end": content["end"], "total": content["totals"]["amount"],
                "runs": content["runs"],
            }, settings=settings)
    if created:
        log.info("report_created", report_id=rid, workspace_id=workspace_id, day=content["day"])
    return created


@dataclass
class ReportPass:
    start: int  # first day considered
    end: int  # exclusive: days before it were all considered
    due: int = 0  # (workspace, day) pairs that had no report
    created: int = 0

    @property
    def key(self) -> str:
        return f"{day_name(self.start)}..{day_name(self.end - DAY_US)}"


async def write_reports(db: Database, settings: Settings, book: PriceBook, start: int, end: int) -> ReportPass:
    """Write every missing report for the days in ``[start, end)`` (day aligned)."""
    result = ReportPass(start, end)
    async with db.read() as session:
        due = sorted((await active_days(session, start, end)) - (await existing_reports(session, start, end)),
                     key=lambda pair: (pair[1], pair[0]))
    result.due = len(due)
    for workspace_id, day in due:
        if await write_daily_report(db, settings, book, workspace_id, day):
            result.created += 1
    return result
