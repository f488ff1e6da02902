"""Re-rating preview: a period's invoices had a price version been in the book, beside what they are.

Both sides come from the billing code itself (invoices.service: the same usage lines,
adjustments and credit), once with the book in force and once with that version put in it,
in one read transaction: nothing is written.  So once the version is added, the next
billing run makes exactly the re-rated invoices (tests/audit/test_preview.py).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from metering.core.money import format_money
from metering.core.pricing import PriceBook
from metering.core.timeutil import format_time
from metering.db import Database
from metering.db.base import now_us
from metering.core.periods import period_bounds
from metering.invoices import credit, payments
from metering.invoices.lines import Line
from metering.invoices.models import Invoice, InvoiceLine
from metering.invoices.service import BILLED, CHUNK, _by_workspace, _drafts, _invoices_of, candidate_workspaces, \
    check_period, close_invoice
from metering.pricing.service import PriceCatalog
from metering.settings import Settings

LineKey = tuple[str, str | None, str | None, str | None, int | None]


def _key(line: Line) -> LineKey:
    return (line.kind, line.usage_kind, line.deployment_id, line.template, line.original_period_start)


async def _invoices(session: AsyncSession, settings: Settings, workspace_ids: list[str], start: int, end: int,
                    book: PriceBook, now: int) -> dict[str, tuple[list[Line], int]]:
    """Each workspace's invoice for the period as billing makes it with ``book``: lines, total."""
    existing = await _by_workspace(session, _invoices_of(workspace_ids, start))
    carried = await credit.carried_credits(session, workspace_ids)
    prepaid = await payments.available_credits(session, workspace_ids)
    # A finalized invoice's own credit is no longer "available": give it back to price it again.
    own = select(Invoice.workspace_id, InvoiceLine.kind, InvoiceLine.amount).join(
        InvoiceLine, InvoiceLine.invoice_id == Invoice.id).where(
        Invoice.workspace_id.in_(workspace_ids), Invoice.period_start == start, Invoice.status.in_(BILLED),
        InvoiceLine.kind.in_(credit.CLOSING_KINDS))
    for ws, kind, amount in await session.execute(own):
        balances = prepaid if kind == "credit" else carried
        balances[ws] = balances.get(ws, 0) - amount
    current = period_bounds(now, settings.billing.period) == (start, end)
    drafts, _ = await _drafts(session, settings, workspace_ids, existing, start, end, book, now, current)
    out = {}
    for draft in drafts:
        closed = close_invoice(draft.lines, carried.get(draft.workspace_id, 0), prepaid.get(draft.workspace_id, 0))
        out[draft.workspace_id] = (closed.lines, closed.total)
    return out


def _line_views(current: list[Line], rerated: list[Line]) -> list[dict[str, Any]]:
    amounts: dict[LineKey, list[int]] = {}
    for side, lines in enumerate((current, rerated)):
        for line in lines:
            amounts.setdefault(_key(line), [0, 0])[side] += line.amount
    views = []
    for key in sorted(amounts, key=lambda k: tuple("" if x is None else str(x) for x in k)):
        kind, usage_kind, deployment_id, template, original = key
        before, after = amounts[key]
        view: dict[str, Any] = {"kind": kind, "deployment_id": deployment_id, "template": template}
        if kind == "adjustment":
            view["usage_kind"] = usage_kind
            view["original_period_start"] = format_time(original) if original is not None else None
        views.append({**view, "current": format_money(before), "rerated": format_money(after),
                      "delta": format_money(after - before)})
    return views


async def preview(
    db: Database, settings: Settings, prices: PriceCatalog, version_doc: Any, start: int, end: int,
    workspace_id: str | None = None, now: int | None = None,
) -> dict[str, Any]:
    version, book = await prices.read_version(db, version_doc)
    check_period(settings, start, end)
    now = now_us() if now is None else now
    rerated_book = book.replacing(version)
    items, totals = [], [0, 0]
    async with db.read() as session:
        workspaces = await candidate_workspaces(session, start, end)
        if workspace_id is not None:
            workspaces = [ws for ws in workspaces if ws == workspace_id]
        for i in range(0, len(workspaces), CHUNK):
            part = workspaces[i : i + CHUNK]
            current = await _invoices(session, settings, part, start, end, book, now)
            rerated = await _invoices(session, settings, part, start, end, rerated_book, now)
            invoices = await _by_workspace(session, _invoices_of(part, start))
            for ws in part:
                (lines_now, total_now), (lines_new, total_new) = current[ws], rerated[ws]
                if not lines_now and not lines_new:
                    continue
                totals[0] += total_now
                totals[1] += total_new
                items.append({"workspace_id": ws, "invoice_id": invoices[ws][0] if ws in invoices else None,
                              "status": invoices[ws][1] if ws in invoices else None,
                              "current": format_money(total_now), "rerated": format_money(total_new),
                              "delta": format_money(total_new - total_now),
                              "lines": _line_views(lines_now, lines_new)})
    return {"period_start": format_time(start), "period_end": format_time(end),
            "effective_from": format_time(version.effective_from), "items": items,
            "current": format_money(totals[0]), "rerated": format_money(totals[1]),
            "delta": format_money(totals[1] - totals[0])}
