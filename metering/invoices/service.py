"""Billing runs: one invoice per workspace per period, refreshed while a draft, then frozen.

Each workspace is billed in its own write transaction.  The invoice row is created with
insert-or-ignore on (workspace_id, period_start) and then locked, so two processes running
the same billing run at once make one invoice, and the gap-free number is taken from a
counter row inside the finalizing transaction (a rollback gives the number back).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, union, update
from sqlalchemy.ext.asyncio import AsyncSession

from metering.core.periods import floor_to, period_bounds
from metering.core.pricing import PriceBook
from metering.core.timeutil import format_time
from metering.db import Database, insert_ignore
from metering.db.base import now_us as current_time_us
from metering.errors import Invalid, field_error
from metering.invoices import payments
from metering.invoices.lines import Line, adjustment_lines, credit_line, usage_lines
from metering.invoices.models import BillingRun, Counter, Invoice, InvoiceLine
from metering.logging import get_logger
from metering.pricing.service import PriceCatalog
from metering.settings import Settings
from metering.usage.compute import aggregate
from metering.usage.models import UsageExtension, UsageInterval, UsageMark
from metering.usage.service import load_usage_rows

INVOICES = Invoice.__table__
LINES = InvoiceLine.__table__
MARKS = UsageMark.__table__
BILLED = ("finalized", "paid")  # statuses whose lines count as billed
log = get_logger(__name__)


@dataclass(frozen=True)
class RunResult:
    id: str
    period_start: int
    period_end: int
    invoices: int
    finalized: int


def check_period(settings: Settings, period_start: int, period_end: int) -> None:
    if period_bounds(period_start, settings.billing.period) != (period_start, period_end):
        raise Invalid(
            f"[period_start, period_end) must be one whole UTC {settings.billing.period}",
            [field_error(f"must start a {settings.billing.period} and end where it ends", "period_start")],
        )


async def candidate_workspaces(session: AsyncSession, start: int, end: int) -> list[str]:
    """Workspaces with usage in the period, or with usage changes before it (late events)."""
    iv, ext = UsageInterval.__table__, UsageExtension.__table__
    query = union(
        select(iv.c.workspace_id).where(iv.c.start >= floor_to(start, "month"), iv.c.start < end, iv.c.end > start),
        select(iv.c.workspace_id).where(iv.c.end.is_(None), iv.c.start < end),
        select(ext.c.workspace_id).where(ext.c.time >= start, ext.c.time < end),
        select(MARKS.c.workspace_id).where(MARKS.c.since < start),
    )
    return sorted((await session.execute(query)).scalars())


async def period_lines(
    session: AsyncSession, workspace_id: str, start: int, end: int, book: PriceBook, now: int
) -> list[Line]:
    intervals, extensions = await load_usage_rows(session, workspace_id, start, end)
    buckets = aggregate(intervals, extensions, book, start=start, end=end, as_of=min(now, end),
                        group_by=("deployment", "template"))
    return usage_lines(buckets)


def _as_line(row) -> Line:  # type: ignore[no-untyped-def]
    return Line(row.kind, row.deployment_id, row.template, row.quantity, row.unit_price, row.amount,
                row.description, row.usage_kind, row.original_period_start)


async def billed_lines(session: AsyncSession, workspace_id: str, period_start: int, exclude: str | None) -> list[Line]:
    """Everything already billed for a period: its own invoice and adjustments on later ones."""
    rows = await session.execute(
        select(LINES).join(INVOICES, INVOICES.c.id == LINES.c.invoice_id).where(
            INVOICES.c.workspace_id == workspace_id,
            INVOICES.c.status.in_(BILLED),
            INVOICES.c.id != (exclude or ""),
            ((INVOICES.c.period_start == period_start) & LINES.c.kind.in_(("running", "extension")))
            | ((LINES.c.kind == "adjustment") & (LINES.c.original_period_start == period_start)),
        )
    )
    return [_as_line(r) for r in rows]


async def late_adjustments(
    session: AsyncSession, workspace_id: str, period_start: int, marks_since: int | None,
    book: PriceBook, now: int, exclude: str | None,
) -> list[Line]:
    """Adjustments for finalized periods before this one that late events changed."""
    if marks_since is None or marks_since >= period_start:
        return []
    periods = await session.execute(
        select(INVOICES.c.period_start, INVOICES.c.period_end).where(
            INVOICES.c.workspace_id == workspace_id, INVOICES.c.status.in_(BILLED),
            INVOICES.c.period_end > marks_since, INVOICES.c.period_start < period_start,
        ).order_by(INVOICES.c.period_start)
    )
    out: list[Line] = []
    for start, end in periods.all():
        current = await period_lines(session, workspace_id, start, end, book, now)
        out += adjustment_lines(start, current, await billed_lines(session, workspace_id, start, exclude))
    return out


async def next_number(session: AsyncSession) -> str:
    value = (await session.execute(
        update(Counter).where(Counter.name == "invoice").values(value=Counter.value + 1).returning(Counter.value)
    )).scalar_one()
    return f"INV-{value:06d}"


async def _lock_invoice(db: Database, session: AsyncSession, workspace_id: str, start: int, end: int, now: int):
    await session.execute(
        insert_ignore(INVOICES, db.dialect, ["workspace_id", "period_start"]),
        [{"id": f"inv_{secrets.token_hex(8)}", "workspace_id": workspace_id, "period_start": start,
          "period_end": end, "status": "draft", "created_at": now, "updated_at": now}],
    )
    return (await session.execute(
        select(INVOICES).where(INVOICES.c.workspace_id == workspace_id, INVOICES.c.period_start == start)
        .with_for_update()
    )).one()


async def bill_workspace(
    db: Database, settings: Settings, workspace_id: str, start: int, end: int, book: PriceBook,
    now: int, finalize: bool,
) -> str | None:
    """Create or refresh one workspace's invoice; returns its status, or None if it has none."""
    async with db.write() as session:
        marks = (await session.execute(
            select(MARKS.c.id, MARKS.c.since).where(MARKS.c.workspace_id == workspace_id, MARKS.c.since < end)
        )).all()
        existing = (await session.execute(
            select(INVOICES.c.id, INVOICES.c.status).where(
                INVOICES.c.workspace_id == workspace_id, INVOICES.c.period_start == start)
        )).one_or_none()
        if existing is not None and existing.status != "draft":
            return existing.status  # finalized invoices never change
        exclude = existing.id if existing else None
        lines = await period_lines(session, workspace_id, start, end, book, now)
        lines += await late_adjustments(session, workspace_id, start, min((m.since for m in marks), default=None),
                                        book, now, exclude)
        if not lines:
            if existing is not None:  # usage went away (a late stop): the draft has nothing to bill
                await session.execute(delete(LINES).where(LINES.c.invoice_id == existing.id))
                await session.execute(delete(INVOICES).where(INVOICES.c.id == existing.id))
            return None
        invoice = await _lock_invoice(db, session, workspace_id, start, end, now)
        if invoice.status != "draft":
            return invoice.status  # another process finalized it while we computed
        subtotal = sum(line.amount for line in lines)
        available = await payments.available_credit(session, workspace_id, exclude=invoice.id)
        credit = credit_line(available, subtotal)
        if credit is not None:
            lines.append(credit)
        await session.execute(delete(LINES).where(LINES.c.invoice_id == invoice.id))
        await session.execute(insert(LINES), [
            {"invoice_id": invoice.id, "position": i, "kind": ln.kind, "usage_kind": ln.usage_kind,
             "deployment_id": ln.deployment_id, "template": ln.template, "quantity": ln.quantity,
             "unit_price": ln.unit_price, "amount": ln.amount, "description": ln.description,
             "original_period_start": ln.original_period_start}
            for i, ln in enumerate(lines)
        ])
        credits = -credit.amount if credit else 0
        values = {"subtotal": subtotal, "credits": credits, "total": subtotal - credits, "updated_at": now}
        if finalize:
            values.update(status="finalized", number=await next_number(session), finalized_at=now)
            # These marks are now reflected on a frozen invoice; later ones stay for the next.
            if marks:
                await session.execute(delete(MARKS).where(MARKS.c.id.in_([m.id for m in marks])))
        await session.execute(update(INVOICES).where(INVOICES.c.id == invoice.id).values(**values))
        if finalize:
            await payments.on_finalized(session, settings, invoice.id)
        return values.get("status", "draft")


async def run_billing(
    db: Database, settings: Settings, period_start: int, period_end: int, *,
    now_us: int | None = None, prices: PriceCatalog,
) -> RunResult:
    """Bill every workspace of one period; idempotent, and safe to run from two processes."""
    check_period(settings, period_start, period_end)
    now = now_us if now_us is not None else current_time_us()
    finalize = now >= period_end + settings.billing.grace_seconds * 1_000_000
    book = await prices.refresh(db)
    run_id = f"run_{secrets.token_hex(8)}"
    async with db.write() as session:
        session.add(BillingRun(id=run_id, period_start=period_start, period_end=period_end, started_at=now))
    async with db.read() as session:
        workspaces = await candidate_workspaces(session, period_start, period_end)
    for workspace_id in workspaces:
        await bill_workspace(db, settings, workspace_id, period_start, period_end, book, now, finalize)
    async with db.write() as session:
        counts = (await session.execute(
            select(func.count(), func.count().filter(INVOICES.c.status != "draft")).where(
                INVOICES.c.period_start == period_start, INVOICES.c.period_end == period_end)
        )).one()
        await session.execute(update(BillingRun).where(BillingRun.id == run_id).values(
            finished_at=current_time_us(), invoices=counts[0], finalized=counts[1]))
    log.info("billing_run", run_id=run_id, period_start=format_time(period_start), invoices=counts[0],
             finalized=counts[1])
    return RunResult(run_id, period_start, period_end, counts[0], counts[1])



