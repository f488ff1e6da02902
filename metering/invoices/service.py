"""Billing runs: one invoice per workspace per period, refreshed while a draft, then frozen.

Workspaces are billed in chunks, one write transaction each, with a few statements per
chunk rather than per workspace.  Invoice rows are created with insert-or-ignore on
(workspace_id, period_start) and then locked in workspace order, so two processes running
the same billing run at once make one invoice per workspace, and the gap-free numbers are
taken from a counter row inside the finalizing transaction (a rollback gives them back).

Late usage (invoices.late) is billed only on the current period's drafts, as adjustments
they keep until they are finalized; an invoice's lines close with carried credit, prepaid
credit or, for a negative subtotal, a carry-forward (invoices.lines ``settlement_lines``).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Select, bindparam, delete, func, insert, select, text, union, update
from sqlalchemy.ext.asyncio import AsyncSession

from metering.core.lifecycle import LifetimePolicy
from metering.core.periods import floor_to, period_bounds
from metering.core.pricing import PriceBook
from metering.core.timeutil import TIME_MIN, TIME_RANGE, format_time
from metering.db import Database, insert_ignore
from metering.db.base import now_us as current_time_us
from metering.db.base import rows_in
from metering.errors import Invalid, field_error
from metering.invoices import credit, late, payments, trail
from metering.invoices.lines import Line, adjustment_lines, settlement_lines, usage_lines
from metering.invoices.models import BillingRun, Counter, Invoice, InvoiceLine
from metering.logging import get_logger
from metering.pricing.service import PriceCatalog
from metering.settings import Settings
from metering.usage.compute import StoredExtension, StoredInterval, aggregate
from metering.usage.models import UsageExtension, UsageInterval, still_running
from metering.usage.service import load_usage_rows, load_usage_rows_of

INVOICES = Invoice.__table__
LINES = InvoiceLine.__table__
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
    """Workspaces with usage in the period, or with a draft of it: usage a draft was made from
    can vanish (a sandbox's stop arriving after the draft that billed it running), and that
    draft must be refreshed or dropped, not kept."""
    iv, ext = UsageInterval.__table__, UsageExtension.__table__
    query = union(
        select(iv.c.workspace_id).where(iv.c.start >= floor_to(start, "month"), iv.c.start < end, iv.c.end > start),
        still_running(select(iv.c.workspace_id), end),
        select(ext.c.workspace_id).where(ext.c.time >= start, ext.c.time < end),
        select(INVOICES.c.workspace_id).where(INVOICES.c.period_start == start, INVOICES.c.status == "draft"),
    )
    return sorted((await session.execute(query)).scalars())


def priced_lines(intervals: Iterable[StoredInterval], extensions: Iterable[StoredExtension], book: PriceBook,
                 start: int, end: int, now: int, lifetime: LifetimePolicy) -> list[Line]:
    """A period's running and extension lines from its usage rows, as of ``now``, running time
    cut by ``lifetime`` (the settings' ``[lifetime]``, usage.compute.clip)."""
    buckets = aggregate(intervals, extensions, book, start=start, end=end, as_of=min(now, end), lifetime=lifetime,
                        group_by=("deployment", "template"))
    return usage_lines(buckets)


async def period_lines(
    session: AsyncSession, workspace_id: str, start: int, end: int, book: PriceBook, now: int,
    lifetime: LifetimePolicy,
) -> list[Line]:
    return priced_lines(*await load_usage_rows(session, workspace_id, start, end), book, start, end, now, lifetime)


def _as_line(row) -> Line:  # type: ignore[no-untyped-def]
    return Line(row.kind, row.deployment_id, row.template, row.quantity, row.unit_price, row.amount,
                row.description, row.usage_kind, row.original_period_start)


async def billed_lines(session: AsyncSession, workspace_id: str, period_start: int, exclude: str | None) -> list[Line]:
    """Everything billed for a period: its own finalized invoice, and adjustments for it on
    any other invoice not voided (a draft's will be finalized as they are), but ``exclude``."""
    rows = await session.execute(
        select(LINES).join(INVOICES, INVOICES.c.id == LINES.c.invoice_id).where(
            INVOICES.c.workspace_id == workspace_id,
            INVOICES.c.id != (exclude or ""),
            ((INVOICES.c.period_start == period_start) & INVOICES.c.status.in_(BILLED)
             & LINES.c.kind.in_(("running", "extension")))
            | ((LINES.c.kind == "adjustment") & (LINES.c.original_period_start == period_start)
               & (INVOICES.c.status != "void")),
        )
    )
    return [_as_line(r) for r in rows]


@dataclass
class LateBilling:
    """The adjustments for one workspace's late usage, and the changed days they consume."""

    lines: list[Line]
    periods: set[int]  # the periods (starts) adjusted anew: their earlier adjustments on the draft go
    consumed: list[late.DayKey]


async def bill_late_usage(
    session: AsyncSession, settings: Settings, workspace_id: str, target: str | None,
    days: list[late.DayKey], book: PriceBook, now: int,
) -> LateBilling:
    """Adjustment lines, for the current period's draft ``target``, for the closed periods
    that ``days`` (changed days before the current period) fall in: each period's usage now,
    less everything already billed for it.  A period not closed yet (or whose own invoice is
    still a draft) is billed by its own invoice and keeps its days; one voided gets none."""
    periods = late.by_period(days, settings.billing.period)
    done = await late.closed(session, periods)
    own = dict((await session.execute(select(INVOICES.c.period_start, INVOICES.c.status).where(
        INVOICES.c.workspace_id == workspace_id, INVOICES.c.period_start.in_([s for s, _ in periods])))).all())
    out = LateBilling([], set(), [])
    for (start, end), keys in periods.items():
        if (start, end) not in done or own.get(start) == "draft":
            continue
        out.consumed += keys
        if own.get(start) == "void":
            continue
        current = await period_lines(session, workspace_id, start, end, book, now, settings.lifetime.policy)
        out.lines += adjustment_lines(start, current, await billed_lines(session, workspace_id, start, target))
        out.periods.add(start)
    return out


@dataclass
class Draft:
    """What one workspace's invoice for the period will hold."""

    workspace_id: str
    lines: list[Line]


def _invoices_of(workspace_ids: list[str], start: int) -> Select:
    """(workspace, invoice id, status) of these workspaces' invoices for the period."""
    return select(INVOICES.c.workspace_id, INVOICES.c.id, INVOICES.c.status).where(
        INVOICES.c.workspace_id.in_(workspace_ids), INVOICES.c.period_start == start)


async def _by_workspace(session: AsyncSession, query: Select) -> dict[str, tuple[str, str]]:
    return {ws: (invoice_id, status) for ws, invoice_id, status in await session.execute(query)}


async def _adjustments_on(session: AsyncSession, invoice_ids: list[str]) -> dict[str, list[Line]]:
    """The adjustment lines already on these drafts: billed when they were the current period's."""
    found: dict[str, list[Line]] = {}
    query = select(LINES).where(LINES.c.kind == "adjustment")
    for row in await rows_in(session, query, LINES.c.invoice_id, invoice_ids):
        found.setdefault(row.invoice_id, []).append(_as_line(row))
    return found


async def _adjusted_elsewhere(session: AsyncSession, workspace_ids: list[str], start: int) -> set[str]:
    """Workspaces whose usage of period ``start`` was billed as adjustments (not voided)."""
    query = select(INVOICES.c.workspace_id).join(LINES, LINES.c.invoice_id == INVOICES.c.id).where(
        LINES.c.kind == "adjustment", LINES.c.original_period_start == start, INVOICES.c.status != "void")
    return {row[0] for row in await rows_in(session, query, INVOICES.c.workspace_id, workspace_ids)}


def _sort_adjustments(lines: list[Line]) -> list[Line]:
    return sorted(lines, key=lambda ln: (ln.original_period_start or 0, *(x or "" for x in ln.key)))


async def lock_workspaces(session: AsyncSession, workspace_ids: list[str]) -> None:
    """Serialize billing per workspace across processes (PostgreSQL; SQLite has one writer):
    a workspace's invoices of different periods, its late usage and its carried credit are
    then read and written by one transaction at a time.  Taken in key order: no deadlock."""
    if session.bind.dialect.name != "postgresql" or not workspace_ids:
        return
    keys = sorted({int.from_bytes(hashlib.sha256(f"billing:{ws}".encode()).digest()[:8], "big", signed=True)
                   for ws in workspace_ids})
    values = ", ".join(f"({k})" for k in keys)
    await session.execute(text(
        f"SELECT pg_advisory_xact_lock(k) FROM (SELECT k FROM (VALUES {values}) AS v(k) ORDER BY k) AS ordered"))


async def _drafts(
    session: AsyncSession, settings: Settings, workspace_ids: list[str], existing: dict[str, tuple[str, str]],
    start: int, end: int, book: PriceBook, now: int, current: bool,
) -> tuple[list[Draft], list[late.DayKey]]:
    """Each workspace's lines: the period's usage, the adjustments its draft already holds and,
    for the current period, adjustments for late usage.  Also the changed days they reflect."""
    # Read before the usage: a change committed meanwhile bumps the version and keeps its row.
    consumed = [key for keys in (await late.changed_days(session, workspace_ids, start, end)).values() for key in keys]
    earlier = await late.changed_days(session, workspace_ids, 0, start) if current else {}
    usage = await load_usage_rows_of(session, workspace_ids, start, end)
    kept = await _adjustments_on(session, [existing[ws][0] for ws in workspace_ids if ws in existing])
    drafts = []
    for ws in workspace_ids:
        intervals, extensions = usage.get(ws, ([], []))
        target = existing[ws][0] if ws in existing else None
        adjustments = kept.get(target or "", [])
        if ws in earlier:
            billed = await bill_late_usage(session, settings, ws, target, earlier[ws], book, now)
            adjustments = [a for a in adjustments if a.original_period_start not in billed.periods] + billed.lines
            consumed += billed.consumed
        lines = priced_lines(intervals, extensions, book, start, end, now, settings.lifetime.policy)
        drafts.append(Draft(ws, lines + _sort_adjustments(adjustments)))
    return drafts, consumed


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
    carried_credit=bindparam("carried_credit_"), carried_forward=bindparam("carried_forward_"),
    status=bindparam("status_"), number=bindparam("number_"), finalized_at=bindparam("finalized_at_"),
    updated_at=bindparam("updated_at_"))


async def bill_workspaces(
    db: Database, settings: Settings, workspace_ids: list[str], start: int, end: int, book: PriceBook,
    now: int, finalize: bool, *, current: bool = False, closed: bool = False,
) -> None:
    """Create or refresh the invoices of some workspaces, in one write transaction.

    One transaction for many workspaces shares its statements and its commit (one fsync);
    a crash rolls all of them back together, and the next run bills them again.
    ``current``: the period is the current one, whose drafts take the late usage.
    ``closed``: a final run of the period has finished: its drafts are finalized, but no new
    invoice is made (usage arriving for it now is late usage, billed on the current draft).
    """
    async with db.write() as session:
        await lock_workspaces(session, workspace_ids)
        existing = await _by_workspace(session, _invoices_of(workspace_ids, start))
        # Finalized invoices never change.
        open_ids = [ws for ws in workspace_ids if existing.get(ws, ("", "draft"))[1] == "draft"]
        new_ids = [ws for ws in open_ids if ws not in existing]
        if closed:
            open_ids = [ws for ws in open_ids if ws in existing]
        elif finalize and new_ids:
            # A run that began before the period closed: what the current drafts already took
            # as late usage is not billed again on a new invoice.
            taken = await _adjusted_elsewhere(session, new_ids, start)
            open_ids = [ws for ws in open_ids if ws not in taken]
        if not open_ids:
            return
        drafts, consumed = await _drafts(session, settings, open_ids, existing, start, end, book, now, current)
        await late.consume(session, consumed)
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
        await _write_invoices(session, drafts, invoice_ids, now, finalize)
        if finalize:
            await invoices_finalized(session, settings, invoice_ids)


async def _write_invoices(session: AsyncSession, drafts: list[Draft], invoice_ids: list[str], now: int,
                          finalize: bool) -> None:
    """The drafts' lines, closed by carried and prepaid credit (or a carry-forward), and totals."""
    workspace_ids = [d.workspace_id for d in drafts]
    carried = await credit.carried_credits(session, workspace_ids)
    prepaid = await payments.available_credits(session, workspace_ids)
    numbers = await next_numbers(session, len(drafts)) if finalize else [None] * len(drafts)
    line_rows, totals = [], []
    for draft, invoice_id, number in zip(drafts, invoice_ids, numbers):
        closed = close_invoice(draft.lines, carried.get(draft.workspace_id, 0), prepaid.get(draft.workspace_id, 0))
        line_rows += [
            {"invoice_id": invoice_id, "position": i, "kind": ln.kind, "usage_kind": ln.usage_kind,
             "deployment_id": ln.deployment_id, "template": ln.template, "quantity": ln.quantity,
             "unit_price": ln.unit_price, "amount": ln.amount, "description": ln.description,
             "original_period_start": ln.original_period_start}
            for i, ln in enumerate(closed.lines)
        ]
        totals.append({"invoice_id": invoice_id, "subtotal_": closed.subtotal, "credits_": closed.credits,
                       "carried_credit_": closed.carried_credit, "carried_forward_": closed.carried_forward,
                       "total_": closed.total, "status_": "finalized" if finalize else "draft",
                       "number_": number, "finalized_at_": now if finalize else None, "updated_at_": now})
    await session.execute(delete(LINES).where(LINES.c.invoice_id.in_(invoice_ids)))
    await session.execute(insert(LINES), line_rows)
    await session.execute(_SET_TOTALS, totals)


@dataclass
class ClosedInvoice:
    """An invoice's lines closed by carried and prepaid credit (or a carry-forward), and its totals."""

    lines: list[Line]
    subtotal: int
    credits: int
    carried_credit: int
    carried_forward: int
    total: int


def close_invoice(lines: list[Line], carried: int, prepaid: int) -> ClosedInvoice:
    """The one place an invoice's credit and total are decided (billing and the re-rating preview)."""
    subtotal = sum(line.amount for line in lines)
    closing = settlement_lines(subtotal, carried, prepaid)
    by_kind = {ln.kind: ln.amount for ln in closing}
    everything = [*lines, *closing]
    return ClosedInvoice(everything, subtotal, -by_kind.get("carried_credit", 0) - by_kind.get("credit", 0),
                         -by_kind.get("carried_credit", 0), by_kind.get("carry_forward", 0),
                         sum(ln.amount for ln in everything))


async def invoices_finalized(session: AsyncSession, settings: Settings, invoice_ids: list[str]) -> None:
    """In the finalizing transaction, once the invoices are final (numbered, frozen)."""
    await trail.finalized(session, invoice_ids)
    await payments.on_finalized(session, settings, invoice_ids)


async def settle_late_usage(
    db: Database, settings: Settings, book: PriceBook, now: int, period: tuple[int, int] | None = None,
) -> int:
    """Bill the late usage of closed periods on the current period's drafts; how many workspaces.

    Every billing run ends with it, so late usage is billed by the next run of any period.
    """
    start, end = period or period_bounds(now, settings.billing.period)
    async with db.read() as session:
        workspaces = await late.pending_workspaces(session, start, settings.billing.period)
    for i in range(0, len(workspaces), CHUNK):
        await bill_workspaces(db, settings, workspaces[i : i + CHUNK], start, end, book, now, False, current=True)
    return len(workspaces)


async def run_billing(
    db: Database, settings: Settings, period_start: int, period_end: int, *,
    now_us: int | None = None, prices: PriceCatalog,
) -> RunResult:
    """Bill every workspace of one period; idempotent, and safe to run from two processes.

    The current period's drafts also take the late usage of closed periods; a run of an
    ended period finalizes it (once its grace has passed) and then bills late usage on the
    current drafts.  A period already closed gets no new invoice, only its drafts finalized.
    """
    check_period(settings, period_start, period_end)
    now = now_us if now_us is not None else current_time_us()
    if not TIME_MIN <= period_start <= now:  # a period that has not begun has nothing to bill yet
        raise Invalid("the period has not begun" if period_start > now else f"the period must lie in {TIME_RANGE}",
                      [field_error(f"must be in {TIME_RANGE} and not after now", "period_start")])
    finalize = now >= period_end + settings.billing.grace_seconds * 1_000_000
    current = period_bounds(now, settings.billing.period)
    is_current = current == (period_start, period_end)
    book = await prices.refresh(db)
    run_id = f"run_{secrets.token_hex(8)}"
    async with db.write() as session:
        session.add(BillingRun(id=run_id, period_start=period_start, period_end=period_end, started_at=now,
                               final=finalize))
    async with db.read() as session:
        closed = finalize and bool(await late.closed(session, [(period_start, period_end)]))
        # Drafts too: one whose usage went away (a late stop) is dropped, not left stale.
        drafts = select(INVOICES.c.workspace_id).where(INVOICES.c.period_start == period_start,
                                                       INVOICES.c.status == "draft")
        workspaces = sorted((await session.execute(drafts)).scalars())
        if not closed:
            workspaces = sorted({*workspaces, *await candidate_workspaces(session, period_start, period_end)})
        if is_current:
            workspaces = sorted({*workspaces, *await late.pending_workspaces(session, period_start,
                                                                             settings.billing.period)})
    for i in range(0, len(workspaces), CHUNK):
        await bill_workspaces(db, settings, workspaces[i : i + CHUNK], period_start, period_end, book, now, finalize,
                              current=is_current, closed=closed)
    async with db.write() as session:
        counts = (await session.execute(
            select(func.count(), func.count().filter(INVOICES.c.status != "draft")).where(
                INVOICES.c.period_start == period_start, INVOICES.c.period_end == period_end)
        )).one()
        await session.execute(update(BillingRun).where(BillingRun.id == run_id).values(
            finished_at=current_time_us(), invoices=counts[0], finalized=counts[1]))
    if not is_current:  # the period is closed now if this run was final: its late usage too
        await settle_late_usage(db, settings, book, now, current)
    log.info("billing_run", run_id=run_id, period_start=format_time(period_start), invoices=counts[0],
             finalized=counts[1])
    return RunResult(run_id, period_start, period_end, counts[0], counts[1])
