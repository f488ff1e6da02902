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


async def balance(session: AsyncSession, workspace_id: str) -> tuple[int, int]:
    """(carried credit, prepaid credit not applied yet) of a workspace, never below zero."""
    carried = (await carried_credits(session, [workspace_id])).get(workspace_id, 0)
    prepaid = (await payments.available_credits(session, [workspace_id])).get(workspace_id, 0)
    return max(carried, 0), max(prepaid, 0)
