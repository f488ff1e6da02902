"""Sessions of the page: opened with a token once, then a cookie (HttpOnly, SameSite=Strict).

The token never goes into a URL nor into the cookie: the cookie is a random id, the table
keeps its hash, the token's id and what it may see.  Each page checks that the token is
still active, so revoking it signs its sessions out.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import delete, select

from metering.db import Database
from metering.db.base import now_us
from metering.tokens.models import ApiToken
from metering.tokens.service import ADMIN, Principal
from metering.web.models import WebSession

SESSIONS = WebSession.__table__
TOKENS = ApiToken.__table__
COOKIE = "metering_session"
TTL_US = 8 * 3600 * 1_000_000


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def open_session(db: Database, principal: Principal) -> str:
    session_id = secrets.token_urlsafe(32)
    now = now_us()
    async with db.write() as session:
        await session.execute(delete(SESSIONS).where(SESSIONS.c.expires_at < now))
        await session.execute(SESSIONS.insert().values(
            id_hash=_hash(session_id), token_id=principal.token_id, workspace_id=principal.workspace_id,
            scopes=" ".join(sorted(principal.scopes)), expires_at=now + TTL_US))
    return session_id


async def session_principal(db: Database, session_id: str | None) -> Principal | None:
    """Who a cookie belongs to, or None (unknown, expired, or its token revoked)."""
    if not session_id or len(session_id) > 128:
        return None
    async with db.read() as session:
        row = (await session.execute(select(SESSIONS).where(SESSIONS.c.id_hash == _hash(session_id)))).first()
        if row is None or row.expires_at <= now_us():
            return None
        if row.token_id != ADMIN.token_id:
            active = (await session.execute(select(TOKENS.c.id).where(
                TOKENS.c.id == row.token_id, TOKENS.c.revoked_at.is_(None)))).first()
            if active is None:
                return None
    return Principal(token_id=row.token_id, scopes=frozenset(row.scopes.split()), workspace_id=row.workspace_id)


async def close_session(db: Database, session_id: str | None) -> None:
    if session_id:
        async with db.write() as session:
            await session.execute(delete(SESSIONS).where(SESSIONS.c.id_hash == _hash(session_id)))
