from __future__ import annotations

from sqlalchemy import BigInteger, Text
from sqlmodel import Field, SQLModel


class WebSession(SQLModel, table=True):
    """A signed-in browser. The cookie holds a random id; only its SHA-256 is stored, and
    the token it was opened with is checked again (revocation) on every page."""

    __tablename__ = "web_sessions"

    id_hash: str = Field(primary_key=True, max_length=64)
    token_id: str = Field(max_length=40)
    workspace_id: str | None = Field(default=None, max_length=128)
    scopes: str = Field(sa_type=Text)
    expires_at: int = Field(sa_type=BigInteger)
