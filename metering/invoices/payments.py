"""What settlements do to invoices: payments received, credit available, paid status.

Nothing here is stored twice: amounts paid and credit available are derived from the
settlements' current status, so a settlement that is reorged out reverses its effect by
itself.  Only the invoice status (finalized <-> paid) is kept in step, by ``sync_paid``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from metering.core.money import format_money
from metering.core.timeutil import format_time
from metering.db.base import now_us, rows_in
from metering.errors import Conflict, NotFound
from metering.invoices import trail
from metering.invoices.models import Invoice, InvoiceLine
from metering.settings import Settings
from metering.settlements import service as settlements
from metering.settlements.models import Settlement
from metering.webhooks.outbox import enqueue_many

INVOICES = Invoice.__table__
LINES = InvoiceLine.__table__


async def amount_paid(session: AsyncSession, invoice_id: str) -> int:
    return await settlements.confirmed_amount_for_invoice(session, invoice_id)


async def available_credits(session: AsyncSession, workspace_ids: Sequence[str]) -> dict[str, int]:
    """Confirmed prepaid credit less what finalized invoices already applied, per workspace.

    Workspaces that never bought credit are left out (they have none).
    """
    bought = await settlements.confirmed_credit_totals(session, workspace_ids)
    applied_lines = (
        select(INVOICES.c.workspace_id, func.sum(-LINES.c.amount))
        .join(INVOICES, INVOICES.c.id == LINES.c.invoice_id)
        .where(INVOICES.c.status.in_(("finalized", "paid")), LINES.c.kind == "credit")
        .group_by(INVOICES.c.workspace_id)
    )
    applied = {ws: int(amount) for ws, amount in await rows_in(session, applied_lines, INVOICES.c.workspace_id,
                                                                sorted(bought))}
    return {ws: amount - applied.get(ws, 0) for ws, amount in bought.items()}


async def sync_paid(session: AsyncSession, invoice_ids: Sequence[str] | None = None) -> int:
    """Mark finalized invoices paid once covered, and paid ones back if a payment reorged."""
    query = select(INVOICES.c.id, INVOICES.c.status, INVOICES.c.total).where(
        INVOICES.c.status.in_(("finalized", "paid")))
    if invoice_ids is None:
        paid_for = select(Settlement.invoice_id).where(Settlement.purpose_kind == "invoice")
        rows = (await session.execute(query.where(INVOICES.c.id.in_(paid_for)))).all()
    else:
        rows = await rows_in(session, query, INVOICES.c.id, invoice_ids)
    paid = await settlements.confirmed_amounts_for_invoices(session, [row.id for row in rows])
    changed = 0
    for invoice_id, status, total in rows:
        covered = total > 0 and paid.get(invoice_id, 0) >= total
        wanted = "paid" if covered else "finalized"
        if wanted != status:
            await session.execute(update(INVOICES).where(INVOICES.c.id == invoice_id).values(
                status=wanted, paid_at=now_us() if covered else None))
            await trail.status_changed(session, invoice_id, wanted, paid.get(invoice_id, 0))
            changed += 1
    return changed


async def on_finalized(session: AsyncSession, settings: Settings, invoice_ids: Sequence[str]) -> None:
    """In the finalizing transaction: settle invoices already covered, tell the webhooks."""
    await sync_paid(session, invoice_ids)
    finalized = await rows_in(session, select(INVOICES), INVOICES.c.id, invoice_ids)
    await enqueue_many(session, "invoice.finalized", [
        {"invoice_id": row.id, "number": row.number, "workspace_id": row.workspace_id,
         "period_start": format_time(row.period_start), "period_end": format_time(row.period_end),
         "total": format_money(row.total)}
        for row in sorted(finalized, key=lambda row: row.number or "")
    ], settings=settings)


async def invoice_check(session: AsyncSession, invoice_id: str) -> str:
    """For a settlement paying an invoice: it must exist and await payment. Its workspace."""
    row = (await session.execute(
        select(INVOICES.c.workspace_id, INVOICES.c.status).where(INVOICES.c.id == invoice_id))).one_or_none()
    if row is None:
        raise NotFound(f"no invoice {invoice_id!r}")
    if row.status != "finalized":
        raise Conflict(f"invoice {invoice_id!r} is {row.status}; only a finalized, unpaid invoice can be paid")
    return row.workspace_id


async def on_settlement_change(session: AsyncSession, settlement: Settlement) -> None:
    """A settlement changed status (same transaction): keep its invoice's status in step."""
    if settlement.purpose_kind == "invoice" and settlement.invoice_id:
        await sync_paid(session, [settlement.invoice_id])
