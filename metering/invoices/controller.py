from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from metering.api.auth import ensure_workspace, require_scope
from metering.api.params import choice_param, id_param, limit_param, time_param
from metering.core.money import format_money, format_seconds
from metering.core.timeutil import format_time
from metering.db.paging import decode_cursor, encode_cursor
from metering.errors import Forbidden, Invalid, field_error
from metering.events.schemas import ID_PATTERN
from metering.invoices import credit, queries
from metering.invoices.models import STATUSES, Invoice, InvoiceLine
from metering.invoices.service import run_billing


class BillingRunRequest(msgspec.Struct, forbid_unknown_fields=True):
    period_start: str
    period_end: str


def line_view(line: InvoiceLine) -> dict[str, Any]:
    quantity: Any = format_seconds(line.quantity) if "running" in (line.kind, line.usage_kind) else line.quantity
    view = {
        "kind": line.kind,
        "deployment_id": line.deployment_id,
        "template": line.template,
        "quantity": quantity,
        "unit_price": line.unit_price,
        "amount": format_money(line.amount),
        "description": line.description,
    }
    if line.kind == "adjustment":
        view["usage_kind"] = line.usage_kind
        view["original_period_start"] = format_time(line.original_period_start) if line.original_period_start else None
    return view


def invoice_view(inv: Invoice, lines: list[InvoiceLine], paid: int) -> dict[str, Any]:
    return {
        "id": inv.id,
        "number": inv.number,
        "workspace_id": inv.workspace_id,
        "period_start": format_time(inv.period_start),
        "period_end": format_time(inv.period_end),
        "status": inv.status,
        "lines": [line_view(ln) for ln in lines],
        "subtotal": format_money(inv.subtotal),
        "credits": format_money(inv.credits),
        "carried_credit": format_money(inv.carried_credit),
        "carried_forward": format_money(inv.carried_forward),
        "total": format_money(inv.total),
        "amount_paid": format_money(paid),
        "amount_due": format_money(max(inv.total - paid, 0) if inv.status != "void" else 0),
        "created_at": format_time(inv.created_at),
        "finalized_at": format_time(inv.finalized_at) if inv.finalized_at else None,
        "paid_at": format_time(inv.paid_at) if inv.paid_at else None,
        "voided_at": format_time(inv.voided_at) if inv.voided_at else None,
    }


class BillingRunController(Controller):
    path = "/v1/billing-runs"
    tags = ["invoices"]
    guards = [require_scope]
    opt = {"scope": "invoices:write"}

    @post(operation_id="runBilling", status_code=201, summary="Build (and when due, finalize) a period's invoices")
    async def run(self, request: Request, data: JSONBody[BillingRunRequest]) -> dict[str, Any]:
        if request.state.principal.workspace_id is not None:
            raise Forbidden("a billing run bills every workspace; a token bound to one workspace cannot start it")
        start = time_param("period_start", data.period_start, required=True)
        end = time_param("period_end", data.period_end, required=True, end=True)
        state = request.app.state
        result = await run_billing(state.db, state.settings, start, end, prices=state.prices)
        return {"id": result.id, "period_start": format_time(result.period_start),
                "period_end": format_time(result.period_end), "invoices": result.invoices,
                "finalized": result.finalized}


class InvoiceController(Controller):
    path = "/v1/invoices"
    tags = ["invoices"]
    guards = [require_scope]

    @get(operation_id="listInvoices", opt={"scope": "invoices:read"}, summary="Invoices, newest period first")
    async def list(
        self, request: Request, workspace_id: FromQuery[str | None] = None, status: FromQuery[str | None] = None,
        period_start: FromQuery[str | None] = None, limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        principal = request.state.principal
        if id_param("workspace_id", workspace_id) is not None:
            ensure_workspace(principal, workspace_id)
        scope_ws = workspace_id or principal.workspace_id
        status = choice_param("status", status, STATUSES)
        start = time_param("period_start", period_start)
        size = limit_param(limit)
        position = decode_cursor(cursor)
        async with request.app.state.db.read() as session:
            rows = await queries.page(session, scope_ws, status, start, position, size + 1)
            items = [invoice_view(inv, lines, paid) for inv, lines, paid in rows[:size]]
        last = rows[size - 1][0] if len(rows) > size else None
        return {"items": items, "next_cursor": encode_cursor(last.period_start, last.id) if last else None}

    @get("/{invoice_id:str}", operation_id="getInvoice", opt={"scope": "invoices:read"})
    async def get(self, request: Request, invoice_id: FromPath[str]) -> dict[str, Any]:
        async with request.app.state.db.read() as session:
            found = await queries.one(session, invoice_id, request.state.principal)
        return invoice_view(*found)

    @post("/{invoice_id:str}/void", operation_id="voidInvoice", status_code=200, opt={"scope": "invoices:write"})
    async def void(self, request: Request, invoice_id: FromPath[str]) -> dict[str, Any]:
        db = request.app.state.db
        async with db.write() as session:
            await queries.void(session, invoice_id, request.state.principal)
        async with db.read() as session:
            return invoice_view(*await queries.one(session, invoice_id, request.state.principal))


class BalanceController(Controller):
    path = "/v1/workspaces/{workspace_id:str}/balance"
    tags = ["invoices"]
    guards = [require_scope]
    opt = {"scope": "invoices:read"}

    @get(operation_id="getBalance", summary="Credit a workspace holds for its next invoices",
         description="`credit` = `carried_credit` (negative subtotals carried forward, applied first) + "
                     "`prepaid_credit` (confirmed x402 credit not applied yet). Drafts take nothing from it.")
    async def balance(self, request: Request, workspace_id: FromPath[str]) -> dict[str, Any]:
        ensure_workspace(request.state.principal, workspace_id)
        if not ID_PATTERN.fullmatch(workspace_id):
            raise Invalid("workspace_id is invalid", [field_error("is not a valid id", "workspace_id")])
        async with request.app.state.db.read() as session:
            carried, prepaid = await credit.balance(session, workspace_id)
        return {"workspace_id": workspace_id, "credit": format_money(carried + prepaid),
                "carried_credit": format_money(carried), "prepaid_credit": format_money(prepaid)}
