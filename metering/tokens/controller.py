from __future__ import annotations

import msgspec
from litestar import Controller, Request, delete, post
from litestar.params import FromPath, JSONBody

from metering.api.auth import require_scope
from metering.core.timeutil import format_time
from metering.tokens import service


class TokenCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    scopes: list[str]
    workspace_id: str | None = None


class TokenCreated(msgspec.Struct):
    id: str
    token: str
    name: str
    scopes: list[str]
    workspace_id: str | None
    created_at: str


class TokenController(Controller):
    path = "/v1/tokens"
    tags = ["tokens"]
    guards = [require_scope]
    opt = {"scope": "admin"}

    @post(operation_id="createToken", status_code=201, summary="Create a service token (shown once)")
    async def create(self, request: Request, data: JSONBody[TokenCreate]) -> TokenCreated:
        made = await service.create_token(request.app.state.db, data.name, data.scopes, data.workspace_id,
                                          request.state.principal)
        row = made.row
        return TokenCreated(
            id=row.id,
            token=made.token,
            name=row.name,
            scopes=row.scopes.split(),
            workspace_id=row.workspace_id,
            created_at=format_time(row.created_at),
        )

    @delete("/{token_id:str}", operation_id="revokeToken", status_code=204, summary="Revoke a token at once")
    async def revoke(self, request: Request, token_id: FromPath[str]) -> None:
        await service.revoke_token(request.app.state.db, token_id, request.state.principal)
