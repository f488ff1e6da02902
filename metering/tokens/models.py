from __future__ import annotations

from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=128)
    # sha256 of the whole token; the token itself is never stored.
    token_hash: str = Field(max_length=64, unique=True)
    scopes: str = Field(max_length=512)  # space-separated
    workspace_id: str | None = Field(default=None, max_length=128)
    created_at: int = Field(sa_type=BigInteger)
    revoked_at: int | None = Field(default=None, sa_type=BigInteger)
