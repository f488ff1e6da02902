"""Cost so far (CONTRACT 10): the period's usage up to ``as_of``, the hourly rate of what
runs at ``as_of``, and the forecast to the period's end.

``spent`` is the usage query's own computation (usage.compute.aggregate over the rows
usage.service reads, through the same indexes), so it equals the usage query's total for
``[period_start, as_of)`` by construction, the lifetime cut included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from sqlalchemy import Connection

from metering.core.charges import tariff
from metering.core.lifecycle import LifetimePolicy
from metering.core.money import format_money, round_micro
from metering.core.periods import HOUR_US, period_bounds
from metering.core.pricing import PriceBook
from metering.core.timeutil import format_time
from metering.db import Database
from metering.settings import Settings
from metering.usage.compute import aggregate, clip, total
from metering.usage.service import UsageRows, usage_rows_of


@dataclass(frozen=True)
class Cost:
    workspace_id: str
    period_start: int
    period_end: int
    as_of: int
    spent: Fraction  # exact micro-dollars
    running_sandboxes: int
    hourly_rate: Fraction  # exact micro-dollars per hour
    forecast: Fraction

    def as_doc(self) -> dict:
        return {
            "workspace_id": self.workspace_id,
            "period_start": format_time(self.period_start),
            "period_end": format_time(self.period_end),
            "as_of": format_time(self.as_of),
            "spent": format_money(round_micro(self.spent)),
            "running_sandboxes": self.running_sandboxes,
            "hourly_rate": format_money(round_micro(self.hourly_rate)),
            "forecast": format_money(round_micro(self.forecast)),
        }


def cost_of(workspace_id: str, rows: UsageRows, book: PriceBook, period: tuple[int, int], as_of: int,
            lifetime: LifetimePolicy) -> Cost:
    """The cost of one workspace from its rows for ``[period_start, as_of]`` (rows_window)."""
    period_start, period_end = period
    intervals, extensions = rows
    spent = total(aggregate(intervals, extensions, book, start=period_start, end=as_of, as_of=as_of,
                            lifetime=lifetime))
    # Running at ``as_of``: billed in the microsecond starting there (so a sandbox past its
    # lifetime cut, with ``bill_beyond = false``, adds nothing to the rate).
    prices = tariff(book)
    running = [iv for iv in intervals if clip(iv, as_of, as_of + 1, as_of + 1, lifetime) is not None]
    hourly = sum((prices.rates(iv.template, as_of).hourly for iv in running), start=Fraction(0))
    forecast = spent + hourly * Fraction(period_end - as_of, HOUR_US)
    return Cost(workspace_id, period_start, period_end, as_of, spent, len(running), hourly, forecast)


def rows_window(period_start: int, as_of: int) -> tuple[int, int]:
    # One microsecond past ``as_of``: an interval opened exactly at ``as_of`` runs then.
    return period_start, as_of + 1


def costs_of(
    conn: Connection, workspace_ids: Sequence[str], book: PriceBook, bounds: tuple[int, int], as_of: int,
    lifetime: LifetimePolicy,
) -> list[Cost]:
    """The cost of several workspaces in one period at one ``as_of``: two queries in all."""
    rows = usage_rows_of(conn, workspace_ids, *rows_window(bounds[0], as_of))
    return [cost_of(ws, rows.get(ws, ([], [])), book, bounds, as_of, lifetime) for ws in workspace_ids]


async def workspace_cost(db: Database, settings: Settings, workspace_id: str, book: PriceBook, as_of: int) -> Cost:
    bounds, lifetime = period_bounds(as_of, settings.billing.period), settings.lifetime.policy
    return (await db.run_read(lambda conn: costs_of(conn, [workspace_id], book, bounds, as_of, lifetime)))[0]
