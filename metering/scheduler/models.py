from __future__ import annotations

from sqlalchemy import BigInteger, Index, Text
from sqlmodel import Field, SQLModel

from metering.db.base import bigint_pk


class JobLease(SQLModel, table=True):
    """Who runs a job now. A holder that dies loses it when ``expires_at`` passes."""

    __tablename__ = "job_leases"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    expires_at: int = Field(sa_type=BigInteger)  # microseconds since the epoch


class JobRun(SQLModel, table=True):
    """One run of one job: started, finished, outcome. ``outcome`` NULL: still running or crashed."""

    __tablename__ = "job_runs"
    __table_args__ = (Index("ix_job_runs_job_started", "job", "started_at"),)

    id: int | None = bigint_pk()
    job: str = Field(max_length=64)
    key: str | None = Field(default=None, max_length=256)  # what it covered: a period, a day range
    holder: str = Field(max_length=128)
    started_at: int = Field(sa_type=BigInteger)
    finished_at: int | None = Field(default=None, sa_type=BigInteger)
    outcome: str | None = Field(default=None, max_length=16)  # ok | failed | skipped
    detail: str | None = Field(default=None, sa_type=Text)
