"""``/v1/workspaces/{id}/cost``, ``/v1/workspaces/{id}/budget``, ``/v1/sandboxes/overruns``."""

from __future__ import annotations

from litestar import Controller, Request, Response, delete, get, put
from litestar.params import FromPath, FromQuery, JSONBody

from metering.api.auth import ensure_workspace, require_scope
from metering.api.params import limit_param, time_param
from metering.db.base import now_us
from metering.db.paging import decode_cursor, encode_cursor
from metering.errors import Invalid, NotFound, field_error
from metering.events.schemas import ID_PATTERN
from metering.spend.budgets import BudgetBody, budget_doc, notified, parse_budget, read_budget, write_budget
from metering.spend.cost import Cost, workspace_cost
from metering.spend.overruns import list_overruns

MIN_TIME, MAX_TIME = 946_684_800_000_000, 4_102_444_800_000_000  # [2000-01-01, 2100-01-01)


def workspace_param(request: Request, workspace_id: str) -> str:
    ensure_workspace(request.state.principal, workspace_id)
    if not ID_PATTERN.fullmatch(workspace_id):
        raise Invalid("workspace_id is invalid", [field_error("is not a valid id", "workspace_id")])
    return workspace_id


def as_of_param(as_of: str | None) -> int:
    value = time_param("as_of", as_of)
    if value is None:
        return now_us()
    if not MIN_TIME <= value < MAX_TIME:
        raise Invalid("as_of is out of range", [field_error("must lie in [2000-01-01, 2100-01-01)", "as_of")])
    return value


async def cost_at(request: Request, workspace_id: str, as_of: int) -> Cost:
    """The cost so far of one workspace (the API and the page)."""
    state = request.app.state
    book = await state.prices.refresh(state.db)
    return await workspace_cost(state.db, state.settings, workspace_id, book, as_of)


class CostController(Controller):
    path = "/v1/workspaces/{workspace_id:str}"
    tags = ["spend"]
    guards = [require_scope]

    @get("/cost", operation_id="getCost", summary="Cost so far this billing period, the hourly rate and the forecast",
         opt={"scope": "usage:read"})
    async def cost(self, request: Request, workspace_id: FromPath[str], as_of: FromQuery[str | None] = None) -> dict:
        workspace_id = workspace_param(request, workspace_id)
        return (await cost_at(request, workspace_id, as_of_param(as_of))).as_doc()

    @put("/budget", operation_id="putBudget", summary="Set the workspace's budget per billing period",
         opt={"scope": "invoices:write"}, status_code=200)
    async def put_budget(self, request: Request, workspace_id: FromPath[str], data: JSONBody[BudgetBody]) -> dict:
        workspace_id = workspace_param(request, workspace_id)
        spec = parse_budget(data)
        await write_budget(request.app.state.db, workspace_id, spec)
        return await self._doc(request, workspace_id)

    @get("/budget", operation_id="getBudget", summary="The budget, what is spent and the thresholds crossed",
         opt={"scope": "usage:read"})
    async def get_budget(self, request: Request, workspace_id: FromPath[str], as_of: FromQuery[str | None] = None) -> dict:
        workspace_id = workspace_param(request, workspace_id)
        return await self._doc(request, workspace_id, as_of_param(as_of))

    @delete("/budget", operation_id="deleteBudget", summary="Remove the workspace's budget",
            opt={"scope": "invoices:write"}, status_code=204)
    async def delete_budget(self, request: Request, workspace_id: FromPath[str]) -> Response[None]:
        workspace_id = workspace_param(request, workspace_id)
        if not await write_budget(request.app.state.db, workspace_id, None):
            raise NotFound(f"workspace {workspace_id!r} has no budget")
        return Response(content=None, status_code=204)

    async def _doc(self, request: Request, workspace_id: str, as_of: int | None = None) -> dict:
        doc = await budget_view(request, workspace_id, now_us() if as_of is None else as_of)
        if doc is None:
            raise NotFound(f"workspace {workspace_id!r} has no budget")
        return doc


async def budget_view(request: Request, workspace_id: str, as_of: int) -> dict | None:
    db = request.app.state.db
    spec = await read_budget(db, workspace_id)
    if spec is None:
        return None
    cost = await cost_at(request, workspace_id, as_of)
    return budget_doc(workspace_id, spec, cost, await notified(db, workspace_id, cost.period_start))


async def overruns_page(request: Request, workspace_id: str | None, as_of: int) -> list:
    state = request.app.state
    book = await state.prices.refresh(state.db)
    return await list_overruns(state.db, state.settings, book, as_of, workspace_id)


class OverrunController(Controller):
    path = "/v1/sandboxes/overruns"
    tags = ["spend"]
    guards = [require_scope]
    opt = {"scope": "usage:read"}

    @get(operation_id="listOverruns", summary="Sandboxes running past their lifetime plus the tolerance")
    async def overruns(
        self,
        request: Request,
        workspace_id: FromQuery[str | None] = None,
        as_of: FromQuery[str | None] = None,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> dict:
        principal = request.state.principal
        if workspace_id:
            workspace_param(request, workspace_id)
        owner = workspace_id or principal.workspace_id  # a bound token lists its own workspace only
        as_of_us = as_of_param(as_of)
        size = limit_param(limit)
        position = decode_cursor(cursor)
        found = await overruns_page(request, owner, as_of_us)
        if position is not None:
            found = [o for o in found if (o.lifetime_end, _row_id(o)) > tuple(position)]
        page = found[:size]
        next_cursor = encode_cursor(page[-1].lifetime_end, _row_id(page[-1])) if len(found) > size else None
        return {"items": [o.as_doc() for o in page], "next_cursor": next_cursor}


def _row_id(o) -> str:  # type: ignore[no-untyped-def]
    # Sorts as (workspace, sandbox): ids never hold a space.
    return f"{o.workspace_id} {o.sandbox_id}"
