"""Credit carried forward: what negative subtotals left for the next invoices.

Derived from finalized and paid invoices only (a draft shows what it would apply but takes
nothing): the ``carry_forward`` lines (positive) less the ``carried_credit`` lines applied
since (negative), so the balance is the sum of both kinds of line.  A voided invoice counts
for nothing: credit it applied comes back, credit it carried forward goes.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from metering.db.base import rows_in
from metering.invoices import payments
from metering.invoices.models import Invoice, InvoiceLine

INVOICES = Invoice.__table__
LINES = InvoiceLine.__table__
CARRY_KINDS = ("carry_forward", "carried_credit")
# Every line that closes an invoice (lines.settlement_lines): credit, not usage.
CLOSING_KINDS = (*CARRY_KINDS, "credit")


async def carried_credits(session: AsyncSession, workspace_ids: Sequence[str]) -> dict[str, int]:
    """Carried credit available per workspace (workspaces without any are left out)."""
    query = (
        select(INVOICES.c.workspace_id, func.sum(LINES.c.amount))
        .join(INVOICES, INVOICES.c.id == LINES.c.invoice_id)
        .where(INVOICES.c.status.in_(("finalized", "paid")), LINES.c.kind.in_(CARRY_KINDS))
        .group_by(INVOICES.c.workspace_id)
    )
    # PostgreSQL sums BIGINT as NUMERIC (a Decimal): int() of it is exact.
    return {ws: int(amount) for ws, amount in await rows_in(session, query, INVOICES.c.workspace_id, workspace_ids)}


async def carried_on_day(session: AsyncSession, workspace_id: str, start: int, end: int) -> dict[str, int]:
    """For a daily report: the carried credit at ``end``, and what invoices finalized in
    ``[start, end)`` carried forward and applied (balance at start = balance - forward + applied)."""
    rows = await session.execute(
        select(LINES.c.kind, INVOICES.c.finalized_at, LINES.c.amount)
        .join(INVOICES, INVOICES.c.id == LINES.c.invoice_id)
        .where(INVOICES.c.workspace_id == workspace_id, INVOICES.c.status.in_(("finalized", "paid")),
               INVOICES.c.finalized_at < end, LINES.c.kind.in_(CARRY_KINDS))
    )
    out = {"balance": 0, "carried_forward": 0, "applied": 0}
    for kind, finalized_at, amount in rows:  # a few lines: one per invoice that carried or applied
        out["balance"] += amount
        if finalized_at >= start:
            out["carried_forward" if kind == "carry_forward" else "applied"] += abs(amount)
    return out


async def balance(session: AsyncSession, workspace_id: str) -> tuple[int, int]:
    """(carried credit, prepaid credit not applied yet) of a workspace, never below zero."""
    carried = (await carried_credits(session, [workspace_id])).get(workspace_id, 0)
    prepaid = (await payments.available_credits(session, [workspace_id])).get(workspace_id, 0)
    return max(carried, 0), max(prepaid, 0)
