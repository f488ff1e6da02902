from __future__ import annotations

from sqlalchemy import BigInteger, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from metering.db.base import bigint_pk


class DeliveryStatus:
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up after the configured number of attempts


class OutboxEvent(SQLModel, table=True):
    """An event to tell the webhooks about, written in the transaction that caused it."""

    __tablename__ = "outbox"
    # Time-ordered inserts, so cheap to keep: pruning reads only the rows past retention.
    __table_args__ = (Index("ix_outbox_created", "created_at"),)

    id: int | None = bigint_pk()
    event_id: str = Field(max_length=40, unique=True)  # evt_<hex>: receivers drop repeats by it
    type: str = Field(max_length=64)
    payload: str = Field(sa_type=Text)  # the event's ``data`` as JSON
    created_at: int = Field(sa_type=BigInteger)


class Delivery(SQLModel, table=True):
    """One event to one endpoint."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("outbox_id", "url", name="uq_deliveries_outbox_url"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )

    id: int | None = bigint_pk()
    outbox_id: int = Field(sa_type=BigInteger, foreign_key="outbox.id")
    url: str = Field(max_length=2048)
    # The name of the env var holding the secret, fixed at enqueue; never the secret.
    secret_env: str = Field(max_length=128)
    status: str = Field(max_length=16)
    attempts: int = 0
    next_attempt_at: int | None = Field(default=None, sa_type=BigInteger)
    last_error: str | None = Field(default=None, max_length=512)
    delivered_at: int | None = Field(default=None, sa_type=BigInteger)
    created_at: int = Field(sa_type=BigInteger)
    updated_at: int = Field(sa_type=BigInteger)
