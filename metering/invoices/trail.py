"""What the audit trail records of invoices, each call in the transaction of the change."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from metering.audit import models as audit
from metering.audit.service import record
from metering.core.money import format_money
from metering.core.timeutil import format_time
from metering.db.base import rows_in
from metering.invoices.models import Invoice, InvoiceLine

INVOICES = Invoice.__table__
LINES = InvoiceLine.__table__


def _facts(row) -> dict:  # type: ignore[no-untyped-def]
    return {"number": row.number, "workspace_id": row.workspace_id, "period_start": format_time(row.period_start),
            "period_end": format_time(row.period_end), "total": format_money(row.total)}


async def finalized(session: AsyncSession, invoice_ids: Sequence[str]) -> None:
    """``invoice.finalized`` for each, in number order, and ``adjustment.billed`` for those
    carrying late usage of earlier periods."""
    rows = sorted(await rows_in(session, select(INVOICES), INVOICES.c.id, invoice_ids), key=lambda r: r.number or "")
    adjustments: dict[str, list] = {}
    for line in await rows_in(session, select(LINES).where(LINES.c.kind == "adjustment").order_by(LINES.c.position),
                              LINES.c.invoice_id, invoice_ids):
        adjustments.setdefault(line.invoice_id, []).append(line)
    for row in rows:
        await record(session, audit.INVOICE_FINALIZED, row.id, {
            **_facts(row), "subtotal": format_money(row.subtotal), "credits": format_money(row.credits)})
        if row.id in adjustments:
            lines = adjustments[row.id]
            await record(session, audit.ADJUSTMENT_BILLED, row.id, {
                **_facts(row), "amount": format_money(sum(line.amount for line in lines)),
                "lines": [{"usage_kind": line.usage_kind, "deployment_id": line.deployment_id,
                           "template": line.template, "original_period_start": format_time(line.original_period_start),
                           "quantity": line.quantity, "amount": format_money(line.amount)} for line in lines]})


async def status_changed(session: AsyncSession, invoice_id: str, status: str, paid: int = 0) -> None:
    """A finalized invoice voided, paid, or back to unpaid (its payment reorged)."""
    row = (await session.execute(select(INVOICES).where(INVOICES.c.id == invoice_id))).one()
    kind = {"void": audit.INVOICE_VOIDED, "paid": audit.INVOICE_PAID, "finalized": audit.INVOICE_UNPAID}[status]
    data = _facts(row) if status == "void" else {**_facts(row), "amount_paid": format_money(paid)}
    await record(session, kind, invoice_id, data)
