"""Billing runs: one invoice per workspace per period, refreshed while a draft, then frozen.

Workspaces are billed in chunks, one write transaction each, with a few statements per
chunk rather than per workspace.  Invoice rows are created with insert-or-ignore on
(workspace_id, period_start) and then locked in workspace order, so two processes running
the same billing run at once make one invoice per workspace, and the gap-free numbers are
taken from a counter row inside the finalizing transaction (a rollback gives them back).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import Select, bindparam, delete, func, insert, select, union, update
from sqlalchemy.ext.asyncio import AsyncSession

from metering.core.periods import floor_to, period_bounds
from metering.core.pricing import PriceBook
from metering.core.timeutil import format_time
from metering.db import Database, insert_ignore
from metering.db.base import in_slices
from metering.db.base import now_us as current_time_us
from metering.errors import Invalid, field_error
from metering.invoices import payments
from metering.invoices.lines import Line, adjustment_lines, credit_line, usage_lines
from metering.invoices.models import BillingRun, Counter, Invoice, InvoiceLine
from metering.logging import get_logger
from metering.pricing.service import PriceCatalog
from metering.settings import Settings
from metering.usage.compute import aggregate
from metering.usage.models import UsageExtension, UsageInterval, UsageMark, still_running
from metering.usage.service import load_usage_rows, load_usage_rows_of

INVOICES = Invoice.__table__
LINES = InvoiceLine.__table__
MARKS = UsageMark.__table__
BILLED = ("finalized", "paid")
# Workspaces per write transaction. More shares more per commit but holds SQLite's write
# lock longer: 100 workspaces take about a third of a second here (BENCHMARKS.md).
CHUNK = 100  # statuses whose lines count as billed
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
    """Workspaces with usage in the period, or with usage changes before it (late events), or
    with a draft of it: usage a draft was made from can vanish (a sandbox's stop arriving after
    the draft that billed it running), and that draft must be refreshed or dropped, not kept."""
    iv, ext = UsageInterval.__table__, UsageExtension.__table__
    query = union(
        select(iv.c.workspace_id).where(iv.c.start >= floor_to(start, "month"), iv.c.start < end, iv.c.end > start),
        still_running(select(iv.c.workspace_id), end),
        select(ext.c.workspace_id).where(ext.c.time >= start, ext.c.time < end),
        select(MARKS.c.workspace_id).where(MARKS.c.since < start),
        select(INVOICES.c.workspace_id).where(INVOICES.c.period_start == start, INVOICES.c.status == "draft"),
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


@dataclass
class Draft:
    """What one workspace's invoice for the period will hold."""

    workspace_id: str
    lines: list[Line]
    mark_ids: list[int]  # the usage marks these lines reflect


def _invoices_of(workspace_ids: list[str], start: int) -> Select:
    """(workspace, invoice id, status) of these workspaces' invoices for the period."""
    return select(INVOICES.c.workspace_id, INVOICES.c.id, INVOICES.c.status).where(
        INVOICES.c.workspace_id.in_(workspace_ids), INVOICES.c.period_start == start)


async def _by_workspace(session: AsyncSession, query: Select) -> dict[str, tuple[str, str]]:
    return {ws: (invoice_id, status) for ws, invoice_id, status in await session.execute(query)}


async def _marks(session: AsyncSession, workspace_ids: list[str], end: int) -> dict[str, list[tuple[int, int]]]:
    marks: dict[str, list[tuple[int, int]]] = {}
    rows = await session.execute(select(MARKS.c.workspace_id, MARKS.c.id, MARKS.c.since).where(
        MARKS.c.workspace_id.in_(workspace_ids), MARKS.c.since < end))
    for ws, mark_id, since in rows:
        marks.setdefault(ws, []).append((mark_id, since))
    return marks


async def _drafts(
    session: AsyncSession, workspace_ids: list[str], existing: dict[str, tuple[str, str]], start: int, end: int,
    book: PriceBook, now: int,
) -> list[Draft]:
    """Each workspace's lines: the period's usage, plus adjustments for earlier periods."""
    usage = await load_usage_rows_of(session, workspace_ids, start, end)
    marks = await _marks(session, workspace_ids, end)
    drafts = []
    for ws in workspace_ids:
        intervals, extensions = usage.get(ws, ([], []))
        buckets = aggregate(intervals, extensions, book, start=start, end=end, as_of=min(now, end),
                            group_by=("deployment", "template"))
        lines = usage_lines(buckets)
        ws_marks = marks.get(ws, [])
        exclude = existing[ws][0] if ws in existing else None
        lines += await late_adjustments(session, ws, start, min((since for _, since in ws_marks), default=None),
                                        book, now, exclude)
        drafts.append(Draft(ws, lines, [mark_id for mark_id, _ in ws_marks]))
    return drafts


async def _drop_drafts(session: AsyncSession, invoice_ids: list[str]) -> None:
    """Drafts whose usage went away (a late stop): nothing left to bill.  Only while still
    drafts: another process may have finalized one since we read it, and that one stays."""
    if invoice_ids:
        still_drafts = (INVOICES.c.id.in_(invoice_ids), INVOICES.c.status == "draft")
        await session.execute(delete(LINES).where(LINES.c.invoice_id.in_(select(INVOICES.c.id).where(*still_drafts))))
        await session.execute(delete(INVOICES).where(*still_drafts))


async def _lock_invoices(
    db: Database, session: AsyncSession, workspace_ids: list[str], start: int, end: int, now: int
) -> dict[str, tuple[str, str]]:
    """Create the missing invoice rows, then lock them all, in workspace order on every process."""
    await session.execute(insert_ignore(INVOICES, db.dialect, ["workspace_id", "period_start"]), [
        {"id": f"inv_{secrets.token_hex(8)}", "workspace_id": ws, "period_start": start, "period_end": end,
         "status": "draft", "created_at": now, "updated_at": now}
        for ws in workspace_ids
    ])
    return await _by_workspace(
        session, _invoices_of(workspace_ids, start).order_by(INVOICES.c.workspace_id).with_for_update())


async def next_numbers(session: AsyncSession, count: int) -> list[str]:
    """``count`` consecutive invoice numbers, taken in the caller's transaction (no gaps)."""
    last = (await session.execute(
        update(Counter).where(Counter.name == "invoice").values(value=Counter.value + count)
        .returning(Counter.value)
    )).scalar_one()
    return [f"INV-{value:06d}" for value in range(last - count + 1, last + 1)]


_SET_TOTALS = update(INVOICES).where(INVOICES.c.id == bindparam("invoice_id")).values(
    subtotal=bindparam("subtotal_"), credits=bindparam("credits_"), total=bindparam("total_"),
    status=bindparam("status_"), number=bindparam("number_"), finalized_at=bindparam("finalized_at_"),
    updated_at=bindparam("updated_at_"))


async def bill_workspaces(
    db: Database, settings: Settings, workspace_ids: list[str], start: int, end: int, book: PriceBook,
    now: int, finalize: bool,
) -> None:
    """Create or refresh the invoices of some workspaces, in one write transaction.

    One transaction for many workspaces shares its statements and its commit (one fsync);
    a crash rolls all of them back together, and the next run bills them again.
    """
    async with db.write() as session:
        existing = await _by_workspace(session, _invoices_of(workspace_ids, start))
        # Finalized invoices never change.
        open_ids = [ws for ws in workspace_ids if existing.get(ws, ("", "draft"))[1] == "draft"]
        if not open_ids:
            return
        drafts = await _drafts(session, open_ids, existing, start, end, book, now)
        await _drop_drafts(session, [existing[d.workspace_id][0] for d in drafts
                                       if not d.lines and d.workspace_id in existing])
        drafts = [d for d in drafts if d.lines]
        if not drafts:
            return
        locked = await _lock_invoices(db, session, [d.workspace_id for d in drafts], start, end, now)
        # Another process may have finalized some while we computed.
        drafts = [d for d in drafts if locked[d.workspace_id][1] == "draft"]
        if not drafts:
            return
        invoice_ids = [locked[d.workspace_id][0] for d in drafts]
        credits = await payments.available_credits(session, [d.workspace_id for d in drafts])
        numbers = await next_numbers(session, len(drafts)) if finalize else [None] * len(drafts)
        line_rows, totals = [], []
        for draft, invoice_id, number in zip(drafts, invoice_ids, numbers):
            lines = draft.lines
            subtotal = sum(line.amount for line in lines)
            credit = credit_line(credits.get(draft.workspace_id, 0), subtotal)
            if credit is not None:
                lines = [*lines, credit]
            line_rows += [
                {"invoice_id": invoice_id, "position": i, "kind": ln.kind, "usage_kind": ln.usage_kind,
                 "deployment_id": ln.deployment_id, "template": ln.template, "quantity": ln.quantity,
                 "unit_price": ln.unit_price, "amount": ln.amount, "description": ln.description,
                 "original_period_start": ln.original_period_start}
                for i, ln in enumerate(lines)
            ]
            applied = -credit.amount if credit else 0
            totals.append({"invoice_id": invoice_id, "subtotal_": subtotal, "credits_": applied,
                           "total_": subtotal - applied, "status_": "finalized" if finalize else "draft",
                           "number_": number, "finalized_at_": now if finalize else None, "updated_at_": now})
        await session.execute(delete(LINES).where(LINES.c.invoice_id.in_(invoice_ids)))
        await session.execute(insert(LINES), line_rows)
        await session.execute(_SET_TOTALS, totals)
        if finalize:
            # These marks are now reflected on frozen invoices; later ones stay for the next.
            for part in in_slices([mark_id for d in drafts for mark_id in d.mark_ids]):
                await session.execute(delete(MARKS).where(MARKS.c.id.in_(part)))
            await payments.on_finalized(session, settings, invoice_ids)


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
    for i in range(0, len(workspaces), CHUNK):
        await bill_workspaces(db, settings, workspaces[i : i + CHUNK], period_start, period_end, book, now, finalize)
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



