"""The lifetime guard (CONTRACT 10): sandboxes still running well past their paid lifetime.

A running interval's lifetime end is stored with it (usage.derive: 15 minutes from the
``running`` event plus the extensions applied while it runs).  Running intervals are few,
read through the small partial index of open intervals; for an ``as_of`` in the past the
closed pieces covering it are read too (a piece never crosses a UTC month, so those start
in the month of ``as_of``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from sqlalchemy import Connection, select

from metering.core.charges import price_interval
from metering.core.lifecycle import LifetimePolicy
from metering.core.money import format_money, format_seconds, round_micro
from metering.core.periods import floor_to
from metering.core.pricing import PriceBook
from metering.core.timeutil import format_time
from metering.db import Database
from metering.settings import Settings
from metering.spend.models import OverrunNotification
from metering.usage.compute import StoredInterval, clip
from metering.usage.models import UsageInterval, still_running
from metering.spend.notify import notify_once

INTERVALS = UsageInterval.__table__
NOTES = OverrunNotification.__table__
WEBHOOK = "sandbox.overrun"
_COLS = (INTERVALS.c.workspace_id, INTERVALS.c.deployment_id, INTERVALS.c.sandbox_id, INTERVALS.c.template,
         INTERVALS.c.start, INTERVALS.c.lifetime_end)


@dataclass(frozen=True)
class Overrun:
    workspace_id: str
    deployment_id: str
    sandbox_id: str
    template: str
    started: int
    lifetime_end: int
    as_of: int
    amount: Fraction  # the running charge of [lifetime_end, as_of), exact

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.workspace_id, self.sandbox_id, self.started)

    def as_doc(self) -> dict:
        return {
            "workspace_id": self.workspace_id,
            "deployment_id": self.deployment_id,
            "sandbox_id": self.sandbox_id,
            "template": self.template,
            "started": format_time(self.started),
            "lifetime_end": format_time(self.lifetime_end),
            "overrun_seconds": format_seconds(self.as_of - self.lifetime_end),
            "overrun_amount": format_money(round_micro(self.amount)),
        }


def overruns_at(
    conn: Connection, book: PriceBook, as_of: int, tolerance_us: int, workspace_id: str | None = None
) -> list[Overrun]:
    """Every interval running at ``as_of`` more than ``tolerance_us`` past its lifetime end,
    ordered by (lifetime end, workspace, sandbox)."""
    late = INTERVALS.c.lifetime_end < as_of - tolerance_us
    still_open = still_running(select(*_COLS), as_of + 1).where(late)
    # Closed since: the piece holding ``as_of`` (the first piece of an interval that crosses
    # a month carries its start; a later piece starts at its month).
    closed = select(*_COLS).where(
        INTERVALS.c.start >= floor_to(as_of, "month"), INTERVALS.c.start <= as_of,
        INTERVALS.c.end.is_not(None), INTERVALS.c.end > as_of, late)
    if workspace_id is not None:
        still_open = still_open.where(INTERVALS.c.workspace_id == workspace_id)
        closed = closed.where(INTERVALS.c.workspace_id == workspace_id)
    found = []
    for ws, dep, sb, template, started, life in conn.execute(still_open.union_all(closed)).all():
        iv = StoredInterval(ws, dep, sb, template, started, None, life)
        found.append(Overrun(ws, dep, sb, template, started, life, as_of, _charge(iv, life, as_of, book)))
    return sorted(found, key=lambda o: (o.lifetime_end, o.workspace_id, o.sandbox_id))


@dataclass(frozen=True)
class OverrunPiece:
    """The part of an overrunning interval past its lifetime end inside a time range (a day
    of a report, an export's range), with its running charge and the part of it billed."""

    interval: StoredInterval
    start: int
    end: int
    amount: Fraction
    billed: Fraction


def overrun_pieces(
    intervals: Iterable[StoredInterval], book: PriceBook, start: int, end: int, as_of: int, lifetime: LifetimePolicy,
) -> list[OverrunPiece]:
    """Intervals that ran (or run at ``as_of``) more than the tolerance past their lifetime
    end, cut to ``[start, end)``.  What is billed of it is what usage.compute.clip lets through."""
    tolerance_us = lifetime.tolerance_us
    out = []
    for iv in intervals:
        if iv.lifetime_end is None:
            continue
        stop = iv.end if iv.end is not None else as_of
        s, e = max(iv.lifetime_end, iv.start, start), min(stop, end)
        if stop - iv.lifetime_end <= tolerance_us or e <= s:
            continue
        billed = clip(iv, s, e, as_of, lifetime)
        out.append(OverrunPiece(iv, s, e, _charge(iv, s, e, book),
                                _charge(iv, *billed, book) if billed else Fraction(0)))
    return sorted(out, key=lambda o: (o.start, o.interval.workspace_id, o.interval.sandbox_id))


def _charge(iv: StoredInterval, start: int, end: int, book: PriceBook) -> Fraction:
    return sum((p.amount for p in price_interval(start, end, iv.template, iv.deployment_id, book)), start=Fraction(0))


async def list_overruns(db: Database, settings: Settings, book: PriceBook, as_of: int,
                        workspace_id: str | None = None) -> list[Overrun]:
    tolerance = settings.lifetime.policy.tolerance_us
    return await db.run_read(lambda conn: overruns_at(conn, book, as_of, tolerance, workspace_id))


async def notify_overruns(db: Database, settings: Settings, book: PriceBook, now: int) -> int:
    """One ``sandbox.overrun`` webhook per interval seen overrunning."""
    found = {o.key: o for o in await list_overruns(db, settings, book, now)}
    rows = [{"workspace_id": ws, "sandbox_id": sb, "started": started, "lifetime_end": o.lifetime_end,
             "created_at": now} for (ws, sb, started), o in found.items()]
    return await notify_once(db, settings, NOTES, ("workspace_id", "sandbox_id", "started"), rows, WEBHOOK,
                             lambda row: found[(row["workspace_id"], row["sandbox_id"], row["started"])].as_doc())
