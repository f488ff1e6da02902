"""Re-deriving finalized invoices from the stored events and price versions (CONTRACT 11).

Nothing derived is trusted: each invoice's usage is folded again from the raw events of its
workspace (core.lifecycle, not the usage tables), counting only the events stored by the
time the invoice was finalized, and priced by the same line code with the price book (the
file's versions and the stored ones) and the settings' ``[lifetime]`` policy, which the
invoices were billed under (with ``bill_beyond = false``, running time past each interval's
lifetime end, folded again here too, plus the tolerance is not billed).  Adjustments are
re-derived the same way: an earlier period's usage then, less what invoices finalized before
this one billed for it.  The lines that close an invoice are checked against the rules
(credit, carried or prepaid, between zero and the subtotal; a negative subtotal carried
forward whole), and the totals to add up.

An event stored while the run that finalized an invoice was reading usage can be counted
on one side and not the other; it then shows as a difference here and as the matching
adjustment on the workspace's next invoice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from metering.core.lifecycle import EVENT_RANK, LifetimePolicy, SandboxEvent, derive
from metering.core.money import format_money, format_seconds
from metering.core.pricing import PriceBook
from metering.core.timeutil import format_time
from metering.db import Database
from metering.errors import Invalid, NotFound, field_error
from metering.events.models import Event
from metering.invoices import credit
from metering.invoices.lines import Line, adjustment_lines
from metering.invoices.models import Invoice, InvoiceLine
from metering.invoices.service import _as_line, priced_lines
from metering.pricing.service import PriceCatalog
from metering.usage.compute import StoredExtension, StoredInterval

FROZEN = ("finalized", "paid", "void")
EVENTS = Event.__table__


@dataclass(frozen=True)
class Difference:
    invoice_id: str
    number: str | None
    line: str  # which line ("running dep_1 giga-pro", "adjustment ...") or "totals"
    stored: str
    derived: str

    def __str__(self) -> str:
        return f"{self.number or '-'} ({self.invoice_id}): {self.line}: stored {self.stored}, derived {self.derived}"


@dataclass(frozen=True)
class Report:
    checked: int
    differences: list[Difference]


class _Workspace:
    """One workspace's lifecycle events, folded again for any cut-off of arrival time."""

    def __init__(self, rows: Iterable) -> None:  # type: ignore[type-arg]
        self.rows = list(rows)

    def usage(self, received_by: int) -> tuple[list[StoredInterval], list[StoredExtension]]:
        by_sandbox: dict[str, list[SandboxEvent]] = defaultdict(list)
        for r in self.rows:
            if r.received_at <= received_by:
                by_sandbox[r.sandbox_id].append(SandboxEvent(r.time, r.type, r.source, r.event_id, r.deployment_id,
                                                             r.template, r.minutes))
        intervals, extensions = [], []
        for sandbox, events in by_sandbox.items():
            ivs, exts = derive(events)
            ws = self.rows[0].workspace_id
            intervals += [StoredInterval(ws, iv.deployment_id, sandbox, iv.template, iv.start, iv.end, iv.lifetime_end)
                          for iv in ivs]
            extensions += [StoredExtension(ws, x.deployment_id, sandbox, x.template, x.time, x.count) for x in exts]
        return intervals, extensions


async def _events(session: AsyncSession, workspace_id: str) -> _Workspace:
    rows = await session.execute(select(EVENTS).where(
        EVENTS.c.workspace_id == workspace_id, EVENTS.c.type.in_(list(EVENT_RANK))))
    return _Workspace(rows.all())


def _billed_then(inv: Invoice, other: Invoice) -> bool:
    """Whether ``other`` counted as billed when ``inv`` was finalized."""
    assert inv.finalized_at is not None
    return (other.id != inv.id and other.finalized_at is not None and other.finalized_at < inv.finalized_at
            and (other.voided_at is None or other.voided_at > inv.finalized_at))


def _expected(inv: Invoice, invoices: list[Invoice], lines: dict[str, list[Line]], events: _Workspace,
              book: PriceBook, lifetime: LifetimePolicy) -> list[Line]:
    """The running, extension and adjustment lines ``inv`` should carry, given the lines the
    invoices finalized before it should carry (``lines``: so a wrong line is named once, on
    its own invoice, not again on the adjustments after it)."""
    assert inv.finalized_at is not None
    at = inv.finalized_at
    expected = priced_lines(*events.usage(at), book, inv.period_start, inv.period_end, at, lifetime)
    earlier = [j for j in invoices if _billed_then(inv, j) and j.period_start < inv.period_start]
    for j in sorted(earlier, key=lambda j: j.period_start):
        current = priced_lines(*events.usage(at), book, j.period_start, j.period_end, at, lifetime)
        billed = [line for k in invoices if k.id == j.id or _billed_then(inv, k) for line in lines[k.id]
                  if (k.id == j.id and line.kind in ("running", "extension"))
                  or (line.kind == "adjustment" and line.original_period_start == j.period_start)]
        expected += adjustment_lines(j.period_start, current, billed)
    return expected


def _name(key: tuple) -> str:  # type: ignore[type-arg]
    kind, usage_kind, deployment_id, template, original = key
    name = f"{kind} {deployment_id} {template}"
    if kind == "adjustment":
        name += f" ({usage_kind}, for the period from {format_time(original)})"
    return name


def _show(kind: str, quantity: int, amount: int) -> str:
    unit = f"{format_seconds(quantity)} s" if kind == "running" else f"x {quantity}"
    return f"{format_money(amount)} ({unit})"


CLOSING = credit.CLOSING_KINDS


def compare(inv: Invoice, stored: list[Line], expected: list[Line]) -> list[Difference]:
    def sums(lines: list[Line]) -> dict[tuple, list[int]]:  # type: ignore[type-arg]
        out: dict[tuple, list[int]] = {}  # type: ignore[type-arg]
        for ln in lines:
            if ln.kind not in CLOSING:
                key = (ln.kind, ln.usage_kind, ln.deployment_id, ln.template, ln.original_period_start)
                out.setdefault(key, [0, 0])
                out[key][0] += ln.quantity
                out[key][1] += ln.amount
        return out

    have, want = sums(stored), sums(expected)
    diffs = []
    for key in sorted(set(have) | set(want), key=lambda k: tuple("" if x is None else str(x) for x in k)):
        if have.get(key) != want.get(key):
            usage_kind = key[1] or key[0]
            diffs.append(Difference(inv.id, inv.number, _name(key),
                                    _show(usage_kind, *have[key]) if key in have else "no line",
                                    _show(usage_kind, *want[key]) if key in want else "no line"))
    subtotal = sum(ln.amount for ln in stored if ln.kind not in CLOSING)
    closing = {kind: sum(ln.amount for ln in stored if ln.kind == kind) for kind in CLOSING}
    carried, credits = -closing["carried_credit"], -closing["credit"] - closing["carried_credit"]
    forward = closing["carry_forward"]
    total = subtotal - credits + forward
    # A negative subtotal is carried forward whole (total 0); otherwise credit never passes it.
    closed_well = (credits == 0 and forward == -subtotal) if subtotal < 0 else (0 <= credits <= subtotal and not forward)
    if not (inv.subtotal == subtotal and inv.credits == credits and inv.carried_credit == carried
            and inv.carried_forward == forward and inv.total == total and closed_well):
        diffs.append(Difference(
            inv.id, inv.number, "totals",
            f"subtotal {format_money(inv.subtotal)} credits {format_money(inv.credits)} "
            f"carried forward {format_money(inv.carried_forward)} total {format_money(inv.total)}",
            f"subtotal {format_money(subtotal)} credits {format_money(credits)} (0 to the subtotal) "
            f"carried forward {format_money(forward)} total {format_money(total)}"))
    return diffs


async def verify_invoices(db: Database, prices: PriceCatalog, invoice_id: str | None = None, *,
                          lifetime: LifetimePolicy) -> Report:
    """Every finalized invoice (or ``invoice_id``), re-derived under ``lifetime``: the settings'
    ``[lifetime]``, which the invoices were billed under."""
    book = await prices.refresh(db)
    async with db.read() as session:
        if invoice_id is not None:
            one = await session.get(Invoice, invoice_id)
            if one is None:
                raise NotFound(f"no invoice {invoice_id!r}")
            if one.status not in FROZEN:
                raise Invalid(f"invoice {invoice_id!r} is a draft; only finalized invoices are verified",
                              [field_error("is not finalized", "id")])
            workspaces = [one.workspace_id]
        else:
            workspaces = list((await session.execute(
                select(Invoice.workspace_id).where(Invoice.status.in_(FROZEN)).distinct()
                .order_by(Invoice.workspace_id))).scalars())
    checked, diffs = 0, []
    for ws in workspaces:  # one read transaction per workspace
        async with db.read() as session:
            invoices = list((await session.execute(select(Invoice).where(
                Invoice.workspace_id == ws, Invoice.status.in_(FROZEN)))).scalars())
            lines: dict[str, list[Line]] = {inv.id: [] for inv in invoices}
            for row in await session.execute(select(InvoiceLine.__table__).where(
                    InvoiceLine.invoice_id.in_(list(lines))).order_by(InvoiceLine.position)):
                lines[row.invoice_id].append(_as_line(row))
            events = await _events(session, ws)
        derived: dict[str, list[Line]] = {}
        for inv in sorted(invoices, key=lambda i: i.finalized_at or 0):
            derived[inv.id] = _expected(inv, invoices, derived, events, book, lifetime)
        for inv in sorted(invoices, key=lambda i: i.number or ""):
            if invoice_id is not None and inv.id != invoice_id:
                continue
            checked += 1
            diffs += compare(inv, lines[inv.id], derived[inv.id])
    return Report(checked, diffs)
