"""The ``invoices``, ``invoice_lines`` and ``settlements`` datasets.

Column values come from the API's own view functions (``invoice_view``, ``line_view``,
settlements ``view``), so an export never disagrees with what ``GET /v1/invoices`` or
``GET /v1/settlements`` shows; their money and time strings are read back into integers
so that every format can write its native type (Parquet decimals and timestamps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from sqlalchemy import Select, func, select

from metering.core.money import parse_money
from metering.core.timeutil import parse_time
from metering.exports import columns as cols
from metering.exports.columns import MICROS, TIME, Column
from metering.exports.plan import Part
from metering.invoices.controller import invoice_view, line_view
from metering.invoices.models import Invoice, InvoiceLine
from metering.settlements.controller import view as settlement_view
from metering.settlements.models import Settlement, Status

INVOICES = Invoice.__table__
LINES = InvoiceLine.__table__
SETTLEMENTS = Settlement.__table__


def typed_row(columns: Sequence[Column], values: Mapping[str, Any]) -> tuple[Any, ...]:
    """An API view's values in column order, its money and time strings as integers again
    (values already stored as integers pass as they are)."""
    out = []
    for column in columns:
        value = values.get(column.name)
        if isinstance(value, str) and column.kind == TIME:
            value = parse_time(value)
        elif isinstance(value, str) and column.kind == MICROS:
            value = parse_money(value)
        out.append(value)
    return tuple(out)


def _fields(model: Any, mapping: Mapping[str, Any]) -> Any:
    return model(**{name: mapping[name] for name in model.__table__.columns.keys()})


def _paid_by_invoice() -> Any:
    # The same sum as settlements.service.confirmed_amount_for_invoice, as one join
    # instead of a query per streamed invoice.
    return select(SETTLEMENTS.c.invoice_id, func.sum(SETTLEMENTS.c.amount).label("paid")).where(
        SETTLEMENTS.c.purpose_kind == "invoice", SETTLEMENTS.c.status == Status.CONFIRMED,
    ).group_by(SETTLEMENTS.c.invoice_id).subquery()


def _invoices_in(query: Select, start: int, end: int, workspace_id: str | None) -> Select:
    query = query.where(INVOICES.c.period_start >= start, INVOICES.c.period_start < end)
    return query if workspace_id is None else query.where(INVOICES.c.workspace_id == workspace_id)


def invoice_parts(start: int, end: int, workspace_id: str | None) -> list[Part]:
    paid = _paid_by_invoice()
    query = select(INVOICES, func.coalesce(paid.c.paid, 0).label("paid")) \
        .outerjoin(paid, paid.c.invoice_id == INVOICES.c.id) \
        .order_by(INVOICES.c.period_start, INVOICES.c.id)

    def convert(rows: Sequence[Any]) -> list[tuple[Any, ...]]:
        # PostgreSQL sums BIGINT as NUMERIC (a Decimal): int() of it is exact.
        return [typed_row(cols.INVOICES, invoice_view(_fields(Invoice, r._mapping), [], int(r.paid)))
                for r in rows]

    return [Part(_invoices_in(query, start, end, workspace_id), convert)]


def line_parts(start: int, end: int, workspace_id: str | None) -> list[Part]:
    query = select(
        LINES, INVOICES.c.number.label("invoice_number"), INVOICES.c.workspace_id,
        INVOICES.c.period_start, INVOICES.c.period_end, INVOICES.c.status.label("invoice_status"),
    ).join(INVOICES, INVOICES.c.id == LINES.c.invoice_id) \
        .order_by(INVOICES.c.period_start, INVOICES.c.id, LINES.c.position)

    def convert(rows: Sequence[Any]) -> list[tuple[Any, ...]]:
        out = []
        for r in rows:
            m = r._mapping
            view = line_view(_fields(InvoiceLine, m))
            quantity = view["quantity"]  # seconds text (running) or a count
            out.append(typed_row(cols.INVOICE_LINES, {
                **view, "quantity": str(quantity), "invoice_id": m["invoice_id"], "position": m["position"],
                "invoice_number": m["invoice_number"], "workspace_id": m["workspace_id"],
                "invoice_status": m["invoice_status"], "period_start": m["period_start"],
                "period_end": m["period_end"],
            }))
        return out

    return [Part(_invoices_in(query, start, end, workspace_id), convert)]


def settlement_parts(start: int, end: int, workspace_id: str | None) -> list[Part]:
    query = select(SETTLEMENTS).where(SETTLEMENTS.c.created_at >= start, SETTLEMENTS.c.created_at < end) \
        .order_by(SETTLEMENTS.c.created_at, SETTLEMENTS.c.id)
    if workspace_id is not None:
        query = query.where(SETTLEMENTS.c.workspace_id == workspace_id)

    def convert(rows: Sequence[Any]) -> list[tuple[Any, ...]]:
        out = []
        for r in rows:
            m = r._mapping
            shown = msgspec.structs.asdict(settlement_view(_fields(Settlement, m)))
            out.append(typed_row(cols.SETTLEMENTS, {
                **shown, "log_index": m["log_index"], "block_hash": m["block_hash"],
                "purpose_kind": m["purpose_kind"], "workspace_id": m["workspace_id"],
                "invoice_id": m["invoice_id"], "run_id": m["run_id"],
            }))
        return out

    return [Part(query, convert)]
