"""Reading invoices for the API, and voiding one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from metering.db.base import now_us
from metering.errors import Conflict, NotFound
from metering.invoices import trail
from metering.invoices.models import Invoice, InvoiceLine
from metering.invoices.payments import amount_paid
from metering.tokens.service import Principal

Found = tuple[Invoice, list[InvoiceLine], int]


async def _with_lines(session: AsyncSession, inv: Invoice) -> Found:
    lines = (await session.execute(
        select(InvoiceLine).where(InvoiceLine.invoice_id == inv.id).order_by(InvoiceLine.position)
    )).scalars().all()
    return inv, list(lines), await amount_paid(session, inv.id)


async def one(session: AsyncSession, invoice_id: str, principal: Principal) -> Found:
    inv = await session.get(Invoice, invoice_id)
    if inv is None or not principal.sees(inv.workspace_id):
        raise NotFound(f"no invoice {invoice_id!r}")
    return await _with_lines(session, inv)


async def page(
    session: AsyncSession, workspace_id: str | None, status: str | None, period_start: int | None,
    after: list[Any] | None, limit: int,
) -> list[Found]:
    query = select(Invoice).order_by(Invoice.period_start.desc(), Invoice.id.desc()).limit(limit)
    if workspace_id is not None:
        query = query.where(Invoice.workspace_id == workspace_id)
    if status is not None:
        query = query.where(Invoice.status == status)
    if period_start is not None:
        query = query.where(Invoice.period_start == period_start)
    if after is not None:
        query = query.where(tuple_(Invoice.period_start, Invoice.id) < tuple_(*after))
    return [await _with_lines(session, inv) for inv in (await session.execute(query)).scalars()]


async def void(session: AsyncSession, invoice_id: str, principal: Principal) -> None:
    inv, _, paid = await one(session, invoice_id, principal)
    if inv.status != "finalized" or paid > 0:
        raise Conflict(f"only a finalized, unpaid invoice can be voided; this one is {inv.status}"
                       + (" with payments" if paid else ""))
    voided = await session.execute(update(Invoice).where(Invoice.id == invoice_id, Invoice.status == "finalized")
                                   .values(status="void", voided_at=now_us()))
    if voided.rowcount:
        await trail.status_changed(session, invoice_id, "void")
