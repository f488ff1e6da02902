from __future__ import annotations

from sqlalchemy import BigInteger, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from metering.db.base import bigint_pk
from metering.events.schemas import RUN_TYPES

# Only run events are counted by workspace and time (daily reports), and they are few next to
# the sandbox lifecycle events: a partial index spares every lifecycle event one random index
# insert, which was a third of SQLite's ingest cost.  Queries must repeat this exact condition,
# as literals, for either engine to use the index.
IS_RUN_EVENT = text("type IN (" + ", ".join(f"'{t}'" for t in RUN_TYPES) + ")")


class Event(SQLModel, table=True):
    """Every accepted CloudEvent, once per ``(source, event_id)``."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "event_id", name="uq_events_source_id"),
        Index("ix_events_runs", "workspace_id", "time", "type", sqlite_where=IS_RUN_EVENT,
              postgresql_where=IS_RUN_EVENT),
    )

    id: int | None = bigint_pk()
    source: str = Field(max_length=512)
    event_id: str = Field(max_length=128)
    type: str = Field(max_length=32)
    time: int = Field(sa_type=BigInteger)  # microseconds since the epoch, UTC
    workspace_id: str = Field(max_length=128)
    deployment_id: str = Field(max_length=128)
    sandbox_id: str | None = Field(default=None, max_length=128)
    run_id: str | None = Field(default=None, max_length=128)
    template: str | None = Field(default=None, max_length=128)
    minutes: int | None = None
    # sha256 of the event's canonical JSON: tells a repeat from a different body.
    body_hash: str = Field(max_length=64)
    payload: str = Field(sa_type=Text)
    received_at: int = Field(sa_type=BigInteger)
