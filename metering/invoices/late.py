"""Which periods late usage changed: the changed days ingest records, read and consumed.

Ingest (usage.derive) writes a ``usage_changed_days`` row for each (workspace, UTC day) whose
usage changed after the day ended, in the transaction that stores the events.  Billing maps
the days onto its periods and, once a period is *closed* (a final billing run of it has
finished), bills the difference as adjustments on the workspace's draft of the current
period.  A row is deleted only at the version it was read at: a change that lands while a
billing run computes keeps its row for the next run.  Nothing here scans all history: the
table holds only changes not billed yet.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from metering.core.periods import period_bounds
from metering.db.base import in_slices, rows_in
from metering.invoices.models import BillingRun
from metering.usage.models import ChangedDay

DAYS = ChangedDay.__table__
RUNS = BillingRun.__table__
Period = tuple[int, int]
DayKey = tuple[str, int, int]  # (workspace, day, version read)


async def changed_days(
    session: AsyncSession, workspace_ids: Sequence[str], start: int, end: int
) -> dict[str, list[DayKey]]:
    """The changed days in ``[start, end)`` of these workspaces, as read now."""
    query = select(DAYS.c.workspace_id, DAYS.c.day, DAYS.c.version).where(DAYS.c.day >= start, DAYS.c.day < end)
    found: dict[str, list[DayKey]] = defaultdict(list)
    for ws, day, version in await rows_in(session, query, DAYS.c.workspace_id, workspace_ids):
        found[ws].append((ws, day, version))
    return found


def by_period(days: Iterable[DayKey], period: str) -> dict[Period, list[DayKey]]:
    periods: dict[Period, list[DayKey]] = defaultdict(list)
    for key in days:
        periods[period_bounds(key[1], period)].append(key)
    return dict(sorted(periods.items()))


async def closed(session: AsyncSession, periods: Iterable[Period]) -> set[Period]:
    """Those of ``periods`` that a final billing run has finished: late usage for them goes
    on the current draft, and a billing run of them makes no new invoice."""
    wanted = sorted(set(periods))
    if not wanted:
        return set()
    query = select(RUNS.c.period_start, RUNS.c.period_end).where(RUNS.c.final, RUNS.c.finished_at.is_not(None)).distinct()
    return {(s, e) for s, e in await rows_in(session, query, RUNS.c.period_start, [s for s, _ in wanted])
            if (s, e) in wanted}


async def pending_workspaces(session: AsyncSession, before: int, period: str) -> list[str]:
    """Workspaces with changed days in closed periods before ``before``: late usage to bill."""
    rows = (await session.execute(
        select(DAYS.c.workspace_id, DAYS.c.day).where(DAYS.c.day < before).distinct())).all()
    periods = {day: period_bounds(day, period) for day in {day for _, day in rows}}
    done = await closed(session, periods.values())
    return sorted({ws for ws, day in rows if periods[day] in done})


async def consume(session: AsyncSession, keys: Sequence[DayKey]) -> None:
    """Delete changed days now billed, each only if no change came since it was read."""
    for part in in_slices(sorted(set(keys))):
        await session.execute(delete(DAYS).where(
            tuple_(DAYS.c.workspace_id, DAYS.c.day, DAYS.c.version).in_([tuple(k) for k in part])))
