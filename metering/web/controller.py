"""``GET /workspaces/{id}``: cost so far, the budget, daily spend (inline SVG) and overruns.

Sign-in is a form that takes a token with ``usage:read`` once (POST, never in a URL) and
sets a session cookie; a workspace-bound token sees only its workspace.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery
from litestar.response import Redirect, Template

from metering.core.money import format_money, round_micro
from metering.core.periods import DAY_US
from metering.core.timeutil import format_time
from metering.db.base import now_us
from metering.events.schemas import ID_PATTERN
from metering.spend.controller import budget_view, cost_at, overruns_page
from metering.tokens.service import Principal, authenticate
from metering.usage.compute import aggregate
from metering.usage.service import read_usage_rows
from metering.web.sessions import COOKIE, TTL_US, close_session, open_session, session_principal

CHART_HEIGHT = 160
BAR_WIDTH = 24


def _next_path(value: str | None) -> str | None:
    """Only a workspace page of this site: never an open redirect."""
    if value and value.startswith("/workspaces/") and ID_PATTERN.fullmatch(value[len("/workspaces/"):]):
        return value
    return None


def _session_cookie(value: str, max_age: int) -> dict[str, Any]:
    return {"key": COOKIE, "value": value, "httponly": True, "samesite": "strict", "path": "/", "max_age": max_age}


async def daily_spend(request: Request, workspace_id: str, period_start: int, as_of: int) -> list[dict]:
    """The period's spend per UTC day up to ``as_of``: each day the usage query's total for it."""
    state = request.app.state
    book = await state.prices.refresh(state.db)
    intervals, extensions = await read_usage_rows(state.db, workspace_id, period_start, as_of)
    buckets = aggregate(intervals, extensions, book, start=period_start, end=as_of, as_of=as_of,
                        lifetime=state.settings.lifetime.policy, window="day")
    days: dict[int, Any] = {}
    for key, bucket in buckets.items():
        day = dict(key)["window_start"]
        days[day] = days.get(day, 0) + bucket.amount
    amounts = [(day, round_micro(days.get(day, 0))) for day in range(period_start, as_of, DAY_US)]
    top = max((a for _, a in amounts), default=0) or 1
    return [{"x": i * (BAR_WIDTH + 4), "day": format_time(day)[:10], "amount": format_money(amount),
             "height": amount * CHART_HEIGHT // top}  # integers: no float on a money path
            for i, (day, amount) in enumerate(amounts)]


class WebController(Controller):
    path = "/"
    include_in_schema = False

    @get("/sign-in", sync_to_thread=False)
    def sign_in_form(self, next: FromQuery[str | None] = None) -> Template:  # noqa: A002
        return Template("sign_in.html", context={"next": _next_path(next) or "", "error": None})

    @post("/sign-in", status_code=303)
    async def sign_in(
        self, request: Request, data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Response:
        state = request.app.state
        token = (data.get("token") or "").strip()
        principal = await authenticate(state.db, token, state.settings.admin_token) if token else None
        target = _next_path(data.get("next"))
        if principal is None or not principal.allows("usage:read"):
            return Template("sign_in.html", status_code=401, context={
                "next": target or "", "error": "That token is unknown, revoked, or lacks the usage:read scope."})
        session_id = await open_session(state.db, principal)
        target = target or (f"/workspaces/{principal.workspace_id}" if principal.workspace_id else "/workspaces")
        response = Redirect(target, status_code=303)
        response.set_cookie(**_session_cookie(session_id, TTL_US // 1_000_000))
        return response

    @post("/sign-out", status_code=303)
    async def sign_out(self, request: Request) -> Response:
        await close_session(request.app.state.db, request.cookies.get(COOKIE))
        response = Redirect("/sign-in", status_code=303)
        response.set_cookie(**_session_cookie("", 0))
        return response

    @get("/workspaces")
    async def choose(self, request: Request, id: FromQuery[str | None] = None) -> Response:  # noqa: A002
        principal = await session_principal(request.app.state.db, request.cookies.get(COOKIE))
        if principal is None:
            return Redirect("/sign-in", status_code=303)
        if id and ID_PATTERN.fullmatch(id):
            return Redirect(f"/workspaces/{id}", status_code=303)
        return Template("choose.html", context={"workspace_id": principal.workspace_id})

    @get("/workspaces/{workspace_id:str}")
    async def workspace(self, request: Request, workspace_id: FromPath[str]) -> Response:
        principal = await session_principal(request.app.state.db, request.cookies.get(COOKIE))
        if principal is None:
            target = f"/workspaces/{workspace_id}" if ID_PATTERN.fullmatch(workspace_id) else ""
            return Redirect(f"/sign-in?next={target}" if target else "/sign-in", status_code=303)
        if not ID_PATTERN.fullmatch(workspace_id) or not _sees(principal, workspace_id):
            return Template("not_found.html", status_code=404, context={"workspace_id": workspace_id})
        as_of = now_us()
        cost = await cost_at(request, workspace_id, as_of)
        budget = await budget_view(request, workspace_id, as_of)
        bars = await daily_spend(request, workspace_id, cost.period_start, as_of)
        overruns = [o.as_doc() for o in await overruns_page(request, workspace_id, as_of)]
        return Template("workspace.html", context={
            "workspace_id": workspace_id, "cost": cost.as_doc(), "budget": budget, "bars": bars,
            "chart_width": max(len(bars), 1) * (BAR_WIDTH + 4), "chart_height": CHART_HEIGHT,
            "bar_width": BAR_WIDTH, "overruns": overruns})


def _sees(principal: Principal, workspace_id: str) -> bool:
    return principal.allows("usage:read") and principal.sees(workspace_id)
