"""``/v1/settlements``: report x402 payments, read what the chain made of them."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from metering.api.auth import current_principal, ensure_workspace, require_scope
from metering.api.params import ADDRESS_PATTERN, id_param
from metering.core.money import format_money
from metering.core.timeutil import format_time
from metering.db.base import now_us
from metering.errors import Invalid, NotFound, field_error
from metering.settlements import service
from metering.settlements.models import Settlement, Status

MAX_LIMIT = 500


class SettlementReport(msgspec.Struct, forbid_unknown_fields=True):
    transaction: str
    purpose: dict[str, Any]
    network: str | None = None
    payment_payload: dict[str, Any] | None = None
    payment_header: str | None = None


class SettlementView(msgspec.Struct):
    id: str
    status: str
    reason: str | None
    network: str
    transaction: str
    block_number: int | None
    payer: str
    pay_to: str
    amount: str
    nonce: str
    purpose: dict[str, Any]
    created_at: str
    confirmed_at: str | None
    last_error: str | None


class SettlementPage(msgspec.Struct):
    items: list[SettlementView]
    next_cursor: str | None


def view(row: Settlement) -> SettlementView:
    return SettlementView(
        id=row.id,
        status=row.status,
        reason=row.reason,
        network=row.network,
        transaction=row.transaction,
        block_number=row.block_number,
        payer=row.payer,
        pay_to=row.pay_to,
        amount=format_money(row.amount),
        nonce=row.nonce,
        purpose=msgspec.json.decode(row.purpose),
        created_at=format_time(row.created_at),
        confirmed_at=format_time(row.confirmed_at) if row.confirmed_at is not None else None,
        last_error=row.last_error,
    )


class SettlementController(Controller):
    path = "/v1/settlements"
    tags = ["settlements"]
    guards = [require_scope]

    @post(
        operation_id="reportSettlement",
        opt={"scope": "settlements:write"},
        summary="Report an x402 payment for verification on chain",
        description=(
            "202 while pending, 201 when already final (confirmed or rejected), "
            "200 when the same payment was reported before."
        ),
    )
    async def report(self, request: Request, data: JSONBody[SettlementReport]) -> Response[SettlementView]:
        state = request.app.state
        now = now_us()
        book = (await state.prices.refresh(state.db)).at(now)
        outcome = await service.report(
            state.db,
            state.settings,
            network=data.network,
            transaction=data.transaction,
            payment_payload=data.payment_payload,
            payment_header=data.payment_header,
            purpose=data.purpose,
            run_tiers=book.run_tiers if book is not None else (),
            principal=current_principal(request),
            invoice_check=state.get("invoice_check"),
            on_change=state.get("on_settlement_change"),
            now=now,
        )
        row = outcome.settlement
        code = 200 if not outcome.created else 202 if row.status == Status.PENDING else 201
        return Response(view(row), status_code=code)

    @get("/{settlement_id:str}", operation_id="getSettlement", opt={"scope": "settlements:read"},
         summary="One settlement")
    async def get_one(self, request: Request, settlement_id: FromPath[str]) -> SettlementView:
        async with request.app.state.db.read() as session:
            row = await service.get_settlement(session, settlement_id)
        if row is None or not current_principal(request).sees(row.workspace_id):
            raise NotFound(f"no settlement {settlement_id!r}")
        return view(row)

    @get(operation_id="listSettlements", opt={"scope": "settlements:read"}, summary="Settlements, newest first")
    async def list_all(
        self,
        request: Request,
        workspace_id: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
        payer: FromQuery[str | None] = None,
        invoice_id: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT)] = 50,
        cursor: FromQuery[str | None] = None,
    ) -> SettlementPage:
        principal = current_principal(request)
        id_param("payer", payer, ADDRESS_PATTERN, "must be an address: 0x and 40 hex digits")
        id_param("invoice_id", invoice_id)
        if id_param("workspace_id", workspace_id) is not None:
            ensure_workspace(principal, workspace_id)
        else:
            workspace_id = principal.workspace_id  # a bound token lists its workspace only
        if status is not None and status not in Status.ALL:
            raise Invalid("unknown status", [field_error(f"must be one of {', '.join(Status.ALL)}", "status")])
        async with request.app.state.db.read() as session:
            rows, next_cursor = await service.list_settlements(
                session, workspace_id=workspace_id, status=status, payer=payer, invoice_id=invoice_id,
                limit=limit, cursor=cursor,
            )
        return SettlementPage(items=[view(r) for r in rows], next_cursor=next_cursor)
