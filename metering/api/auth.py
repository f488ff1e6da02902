"""Bearer-token guard: 401 without a valid token, 403 without the route's scope."""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from metering.errors import Forbidden, NotFound, Unauthorized
from metering.tokens.service import Principal, authenticate


async def require_scope(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    scope: str | None = handler.opt.get("scope")  # None: any valid token
    header = connection.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise Unauthorized("a bearer token is required")
    state = connection.app.state
    principal = await authenticate(state.db, token.strip(), state.settings.admin_token)
    if principal is None:
        raise Unauthorized("the token is unknown or revoked")
    if scope is not None and not principal.allows(scope):
        raise Forbidden(f"the token lacks the {scope!r} scope")
    connection.state.principal = principal


def current_principal(connection: ASGIConnection) -> Principal:
    return connection.state.principal


def ensure_workspace(principal: Principal, workspace_id: str | None) -> None:
    """Another tenant's workspace is 404 for a bound token: never data, never a hint."""
    if not principal.sees(workspace_id):
        raise NotFound(f"no workspace {workspace_id!r}")
