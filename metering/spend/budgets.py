"""Budgets and their alerts (CONTRACT 10).

A budget is an amount per billing period and thresholds in percent of it.  The scheduler's
``spend`` job computes each budgeted workspace's ``spent`` (spend.cost) for the current and
the previous period and, for each threshold reached, inserts a ``budget_notifications``
row and the ``budget.threshold_crossed`` webhook in one transaction.  The row's unique key
(workspace, period, threshold) and insert-or-ignore make the webhook go out once per
crossing, whatever the restarts, the instances running the job, or the ticks that see it.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from sqlalchemy import delete, select

from metering.audit import models as audit
from metering.audit.service import record
from metering.core.money import MICRO, format_money, parse_money, round_micro
from metering.core.periods import period_bounds
from metering.core.pricing import PriceBook
from metering.core.timeutil import format_time
from metering.db import Database
from metering.db.base import in_slices
from metering.db.base import now_us as current_time_us
from metering.errors import Invalid, field_error
from metering.settings import Settings
from metering.spend.cost import Cost, costs_of
from metering.spend.models import Budget, BudgetNotification
from metering.spend.notify import notify_once

BUDGETS = Budget.__table__
NOTES = BudgetNotification.__table__
MAX_AMOUNT = 1_000_000_000 * MICRO  # a billion dollars a period
MAX_THRESHOLDS = 20
WEBHOOK = "budget.threshold_crossed"


@dataclass(frozen=True)
class BudgetSpec:
    amount: int  # micro-dollars
    thresholds: tuple[int, ...]  # ascending, distinct percents


class BudgetBody(msgspec.Struct, forbid_unknown_fields=True):
    amount: str
    thresholds: list[int]


def parse_budget(body: BudgetBody) -> BudgetSpec:
    try:
        amount = parse_money(body.amount)
    except ValueError:
        raise Invalid("amount is invalid", [field_error("must be a money string with at most 6 decimals", "amount")]) \
            from None
    if not 0 < amount <= MAX_AMOUNT:
        raise Invalid("amount is out of range", [field_error("must be more than 0 and at most 1000000000", "amount")])
    thresholds = body.thresholds
    if not 1 <= len(thresholds) <= MAX_THRESHOLDS or len(set(thresholds)) != len(thresholds) \
            or any(isinstance(t, bool) or not 1 <= t <= 1000 for t in thresholds):
        raise Invalid("thresholds are invalid", [field_error(
            f"must be 1 to {MAX_THRESHOLDS} distinct whole percents, each 1 to 1000", "thresholds")])
    return BudgetSpec(amount, tuple(sorted(thresholds)))


def reached(spec: BudgetSpec, spent: int) -> list[int]:
    """The thresholds ``spent`` (rounded micro-dollars, as reported) has reached."""
    return [t for t in spec.thresholds if spent * 100 >= spec.amount * t]


async def write_budget(db: Database, workspace_id: str, spec: BudgetSpec | None) -> bool:
    """Set (``spec``) or remove (None) a workspace's budget: every budget change goes through
    here.  Returns whether there was a budget before."""
    now = current_time_us()
    async with db.write() as session:
        existed = (await session.execute(
            select(BUDGETS.c.workspace_id).where(BUDGETS.c.workspace_id == workspace_id))).first() is not None
        await session.execute(delete(BUDGETS).where(BUDGETS.c.workspace_id == workspace_id))
        if spec is not None:
            await session.execute(BUDGETS.insert().values(
                workspace_id=workspace_id, amount=spec.amount,
                thresholds=",".join(map(str, spec.thresholds)), updated_at=now))
            await record(session, audit.BUDGET_SET, workspace_id,
                         {"amount": format_money(spec.amount), "thresholds": list(spec.thresholds)})
        elif existed:
            await record(session, audit.BUDGET_DELETED, workspace_id, {})
    return existed


def _spec(row) -> BudgetSpec:  # type: ignore[no-untyped-def]
    return BudgetSpec(row.amount, tuple(int(t) for t in row.thresholds.split(",")))


async def read_budget(db: Database, workspace_id: str) -> BudgetSpec | None:
    async with db.read() as session:
        row = (await session.execute(select(BUDGETS).where(BUDGETS.c.workspace_id == workspace_id))).first()
    return None if row is None else _spec(row)


async def notified(db: Database, workspace_id: str, period_start: int) -> list[int]:
    async with db.read() as session:
        return sorted((await session.execute(select(NOTES.c.threshold).where(
            NOTES.c.workspace_id == workspace_id, NOTES.c.period_start == period_start))).scalars())


def budget_doc(workspace_id: str, spec: BudgetSpec, cost: Cost, sent: list[int]) -> dict:
    spent = round_micro(cost.spent)
    return {
        "workspace_id": workspace_id,
        "amount": format_money(spec.amount),
        "thresholds": list(spec.thresholds),
        "period_start": format_time(cost.period_start),
        "period_end": format_time(cost.period_end),
        "spent": format_money(spent),
        # Reached now, or notified earlier in the period (the budget may have been raised since).
        "crossed": sorted(set(reached(spec, spent)) | set(sent)),
    }


def _periods(settings: Settings, now: int) -> list[tuple[int, int]]:
    """The current period and the one before (late events may still cross its thresholds)."""
    current = period_bounds(now, settings.billing.period)
    return [period_bounds(current[0] - 1, settings.billing.period), current]


async def check_budgets(db: Database, settings: Settings, book: PriceBook, now: int) -> int:
    """Notify every threshold reached and not yet notified; returns how many were."""
    async with db.read() as session:
        budgets = {r.workspace_id: _spec(r) for r in await session.execute(select(BUDGETS))}
    sent, lifetime = 0, settings.lifetime.policy
    for ids in in_slices(sorted(budgets)):
        crossings = []
        for start, end in _periods(settings, now):
            as_of = min(now, end)
            costs = await db.run_read(lambda conn: costs_of(conn, ids, book, (start, end), as_of, lifetime))
            for cost in costs:
                spent = round_micro(cost.spent)
                spec = budgets[cost.workspace_id]
                crossings += [(cost.workspace_id, start, t, spec.amount, spent) for t in reached(spec, spent)]
        sent += await notify_once(db, settings, NOTES, ("workspace_id", "period_start", "threshold"), [
            {"workspace_id": ws, "period_start": start, "threshold": t, "amount": amount, "spent": spent,
             "created_at": now} for ws, start, t, amount, spent in crossings], WEBHOOK, _webhook_data)
    return sent


def _webhook_data(row: dict) -> dict:
    return {"workspace_id": row["workspace_id"], "period_start": format_time(row["period_start"]),
            "threshold": row["threshold"], "amount": format_money(row["amount"]), "spent": format_money(row["spent"])}
