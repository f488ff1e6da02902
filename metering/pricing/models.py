from __future__ import annotations

from sqlalchemy import BigInteger, Text
from sqlmodel import Field, SQLModel

from metering.db.base import bigint_pk


class PriceVersionRow(SQLModel, table=True):
    """A price-book version added through the API; versions are never updated."""

    __tablename__ = "price_versions"

    id: int | None = bigint_pk()
    effective_from: int = Field(sa_type=BigInteger, unique=True)
    document: str = Field(sa_type=Text)  # JSON, prices as exact decimal strings
    created_at: int = Field(sa_type=BigInteger)
