"""Service tokens: created once, stored hashed, checked in constant time, revocable."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import update

from metering.audit import models as audit
from metering.audit.service import record
from metering.db import Database
from metering.db.base import now_us
from metering.errors import Forbidden, Invalid, NotFound, field_error
from metering.events.schemas import ID_PATTERN
from metering.logging import get_logger
from metering.tokens.models import ApiToken

SCOPES = (
    "events:write",
    "usage:read",
    "invoices:read",
    "invoices:write",
    "settlements:write",
    "settlements:read",
    "exports:read",
    "admin",
)
TOKEN_PATTERN = re.compile(r"mtr_sk_[0-9a-f]{32}")
TOKENS = ApiToken.__table__
log = get_logger(__name__)
_BY_HASH = f"SELECT id, scopes, workspace_id, token_hash, revoked_at FROM {TOKENS.name} WHERE token_hash = :digest"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a stored token or the operator's admin token."""

    token_id: str
    scopes: frozenset[str]
    workspace_id: str | None = None

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def sees(self, workspace_id: str | None) -> bool:
        """A workspace-bound token sees only its own workspace."""
        return self.workspace_id is None or self.workspace_id == workspace_id


ADMIN = Principal(token_id="admin-env", scopes=frozenset({"admin"}))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedToken:
    row: ApiToken
    token: str


def validate_request(name: str, scopes: list[str], workspace_id: str | None) -> None:
    errors = []
    if not 1 <= len(name) <= 128 or not name.isprintable():
        errors.append(field_error("must be 1 to 128 printable characters", "name"))
    if not scopes:
        errors.append(field_error("at least one scope is required", "scopes"))
    for i, scope in enumerate(scopes):
        if scope not in SCOPES:
            errors.append(field_error(f"unknown scope {scope!r}; known: {', '.join(SCOPES)}", f"scopes[{i}]"))
    if workspace_id is not None and not ID_PATTERN.fullmatch(workspace_id):
        errors.append(field_error("must be 1 to 128 characters of A-Z a-z 0-9 _ . : -", "workspace_id"))
    if errors:
        raise Invalid("the token request is invalid", errors)


def token_facts(row: ApiToken) -> dict:
    """What the audit keeps of a new token: never the token or its hash."""
    return {"name": row.name, "scopes": row.scopes.split(), "workspace_id": row.workspace_id}


def check_grant(creator: Principal, scopes: list[str], workspace_id: str | None) -> None:
    """CONTRACT 1, Token rules: a token makes no token wider than itself."""
    beyond = sorted(set(scopes) - creator.scopes) if "admin" not in creator.scopes else []
    if beyond:
        raise Forbidden(f"a token can only grant scopes it holds; not {', '.join(beyond)}",
                        [field_error("is not a scope of the creating token", "scopes")])
    if creator.workspace_id is not None and workspace_id != creator.workspace_id:
        raise Forbidden(f"a token bound to workspace {creator.workspace_id!r} creates only tokens bound to it",
                        [field_error(f"must be {creator.workspace_id!r}", "workspace_id")])


async def create_token(db: Database, name: str, scopes: list[str], workspace_id: str | None,
                       creator: Principal = ADMIN) -> CreatedToken:
    """``creator``: who asks (the CLI is the operator)."""
    validate_request(name, scopes, workspace_id)
    check_grant(creator, scopes, workspace_id)
    token = f"mtr_sk_{secrets.token_hex(16)}"
    row = ApiToken(
        id=f"tok_{secrets.token_hex(8)}",
        name=name,
        token_hash=hash_token(token),
        scopes=" ".join(dict.fromkeys(scopes)),
        workspace_id=workspace_id,
        created_at=now_us(),
    )
    async with db.write() as session:
        session.add(row)
        await record(session, audit.TOKEN_CREATED, row.id, token_facts(row))
    # Who may now do what; the token itself is never logged.
    log.info("token_created", token_id=row.id, name=name, scopes=list(dict.fromkeys(scopes)), workspace_id=workspace_id)
    return CreatedToken(row=row, token=token)


async def revoke_token(db: Database, token_id: str, revoker: Principal = ADMIN) -> None:
    """A token bound to a workspace revokes only tokens bound to the same workspace."""
    async with db.write() as session:
        found = await session.get(ApiToken, token_id)
        if found is None or not revoker.sees(found.workspace_id):
            raise NotFound(f"no token {token_id!r}")
        result = await session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))  # type: ignore[union-attr]
            .values(revoked_at=now_us())
        )
        if result.rowcount:
            await record(session, audit.TOKEN_REVOKED, token_id, {})
    if result.rowcount:
        log.info("token_revoked", token_id=token_id)


async def authenticate(db: Database, token: str, admin_token: str | None) -> Principal | None:
    """The principal behind a bearer token, or None.  Revocation is checked on every call."""
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return ADMIN
    if not TOKEN_PATTERN.fullmatch(token):
        return None
    digest = hash_token(token)
    # This runs on every request: one indexed lookup, on the event loop where SQLite allows (db.reader).
    row = await db.first_row(_BY_HASH, {"digest": digest})
    if row is None:
        return None
    token_id, scopes, workspace_id, token_hash, revoked_at = row
    if revoked_at is not None or not hmac.compare_digest(token_hash, digest):
        return None
    return Principal(token_id=token_id, scopes=frozenset(scopes.split()), workspace_id=workspace_id)
