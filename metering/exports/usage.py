"""The ``usage`` dataset: one row per billed interval piece and one per extension.

A running interval is clipped to ``[start, end)`` (one still open is cut at
``min(now, end)``, as an invoice of the period would cut it), then split where a new price
version takes effect; each piece and each extension is priced exactly and rounded once.
The pieces of an interval therefore add up, per (workspace, deployment, template), to the
running quantity on the period's invoice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select

from metering.core.charges import extension_charge, price_interval
from metering.core.lifecycle import Extension, LifetimePolicy
from metering.core.money import round_micro, unit_price_text
from metering.core.periods import floor_to
from metering.core.pricing import PriceBook
from metering.exports.plan import Part
from metering.exports.usage_columns import extension_columns, running_columns
from metering.spend.overruns import overrun_pieces
from metering.usage.compute import StoredInterval, clip
from metering.usage.models import UsageExtension, UsageInterval, still_running

INTERVALS = UsageInterval.__table__
EXTENSIONS = UsageExtension.__table__
_IV = (INTERVALS.c.workspace_id, INTERVALS.c.deployment_id, INTERVALS.c.sandbox_id, INTERVALS.c.template,
       INTERVALS.c.start, INTERVALS.c.end, INTERVALS.c.lifetime_end)
_EXT = (EXTENSIONS.c.workspace_id, EXTENSIONS.c.deployment_id, EXTENSIONS.c.sandbox_id, EXTENSIONS.c.template,
        EXTENSIONS.c.time, EXTENSIONS.c.count)


def _in_workspace(query: Select, table: Any, workspace_id: str | None) -> Select:
    return query if workspace_id is None else query.where(table.c.workspace_id == workspace_id)


def closed_intervals(start: int, end: int, workspace_id: str | None) -> Select:
    """Closed pieces overlapping the range: stored pieces never cross a UTC month, so they
    start in the month of ``start`` or later (one index range, as in usage.service)."""
    query = select(*_IV).where(
        INTERVALS.c.start >= floor_to(start, "month"), INTERVALS.c.start < end,
        INTERVALS.c.end.is_not(None), INTERVALS.c.end > start,
    ).order_by(INTERVALS.c.start, INTERVALS.c.id)
    return _in_workspace(query, INTERVALS, workspace_id)


def open_intervals(end: int, workspace_id: str | None) -> Select:
    # Sorted after reading (running intervals are few): ordered by plain ``start``, SQLite
    # would walk all of history along ix_usage_intervals_start to skip the sort.
    query = still_running(select(*_IV), end).order_by(INTERVALS.c.start + 0, INTERVALS.c.id)
    return _in_workspace(query, INTERVALS, workspace_id)


def extensions(start: int, end: int, workspace_id: str | None) -> Select:
    query = select(*_EXT).where(EXTENSIONS.c.time >= start, EXTENSIONS.c.time < end) \
        .order_by(EXTENSIONS.c.time, EXTENSIONS.c.id)
    return _in_workspace(query, EXTENSIONS, workspace_id)


def usage_parts(book: PriceBook, start: int, end: int, workspace_id: str | None, now: int,
                lifetime: LifetimePolicy) -> list[Part]:
    as_of = min(now, end)

    def running_rows(rows: Sequence[Any]) -> list[tuple[Any, ...]]:
        out = []
        for row in rows:
            ws, dep, sb, template = row[:4]
            span = clip(StoredInterval(*row), start, end, as_of, lifetime)
            if span is None:
                continue
            for piece in price_interval(span[0], span[1], template, dep, book):
                out.append(("running", ws, dep, sb, template, piece.start, piece.end, piece.duration, None,
                            unit_price_text(piece.hourly), round_micro(piece.amount)))
        return out

    def extension_rows(rows: Sequence[Any]) -> list[tuple[Any, ...]]:
        out = []
        for ws, dep, sb, template, time, count in rows:
            charge = extension_charge(Extension(time, count, template, dep), book)
            out.append(("extension", ws, dep, sb, template, time, None, None, count,
                        unit_price_text(charge / count), round_micro(charge)))
        return out

    # The same rows over Arrow columns, for the bulk read (usage_columns).
    running = running_columns(book, start, end, as_of, lifetime)
    return [
        Part(closed_intervals(start, end, workspace_id), running_rows, running),
        Part(open_intervals(end, workspace_id), running_rows, running),
        Part(extensions(start, end, workspace_id), extension_rows, extension_columns(book)),
    ]


def overrun_parts(book: PriceBook, start: int, end: int, workspace_id: str | None, now: int,
                  lifetime: LifetimePolicy) -> list[Part]:
    """The ``overruns`` dataset, from the same interval queries as ``usage``."""
    as_of = min(now, end)

    def rows(raw: Sequence[Any]) -> list[tuple[Any, ...]]:
        pieces = overrun_pieces((StoredInterval(*r) for r in raw), book, start, end, as_of, lifetime)
        return [(o.interval.workspace_id, o.interval.deployment_id, o.interval.sandbox_id, o.interval.template,
                 o.interval.start, o.interval.lifetime_end, o.start, o.end, o.end - o.start, round_micro(o.amount),
                 round_micro(o.billed)) for o in pieces]

    return [Part(closed_intervals(start, end, workspace_id), rows), Part(open_intervals(end, workspace_id), rows)]
