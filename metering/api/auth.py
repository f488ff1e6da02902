"""Bearer-token guard: 401 without a valid token, 403 without the route's scope."""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers.base import BaseRouteHandler

from metering.audit.service import actor
from metering.errors import Forbidden, NotFound, Unauthorized
from metering.tokens.service import Principal, authenticate


def bearer_token(authorization: str) -> str | None:
    kind, _, token = authorization.partition(" ")
    return (token.strip() or None) if kind.lower() == "bearer" else None


async def principal_for(state: State, authorization: str) -> Principal | None:
    """Who the ``Authorization`` header's bearer token belongs to, or None."""
    token = bearer_token(authorization)
    return None if token is None else await authenticate(state.db, token, state.settings.admin_token)


async def require_scope(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    scope: str | None = handler.opt.get("scope")  # None: any valid token
    header = connection.headers.get("authorization", "")
    if bearer_token(header) is None:
        raise Unauthorized("a bearer token is required")
    principal = await principal_for(connection.app.state, header)
    if principal is None:
        raise Unauthorized("the token is unknown or revoked")
    if scope is not None and not principal.allows(scope):
        raise Forbidden(f"the token lacks the {scope!r} scope")
    connection.state.principal = principal
    actor.set("operator" if principal.token_id == "admin-env" else principal.token_id)  # who the audit names


def current_principal(connection: ASGIConnection) -> Principal:
    return connection.state.principal


def ensure_workspace(principal: Principal, workspace_id: str | None) -> None:
    """Another tenant's workspace is 404 for a bound token: never data, never a hint."""
    if not principal.sees(workspace_id):
        raise NotFound(f"no workspace {workspace_id!r}")
