from __future__ import annotations

from sqlalchemy import BigInteger, Index, UniqueConstraint
from sqlmodel import Field, SQLModel


class Report(SQLModel, table=True):
    """A written report. The row is inserted after its files, so a row always has content."""

    __tablename__ = "reports"
    __table_args__ = (
        # One report per workspace, kind and day, whatever retries or instances do.
        UniqueConstraint("workspace_id", "kind", "start", name="uq_reports_workspace_kind_start"),
        Index("ix_reports_start_id", "start", "id"),
        Index("ix_reports_ws_start_id", "workspace_id", "start", "id"),
    )

    id: str = Field(primary_key=True, max_length=40)  # rep_<hex>, derived from the unique key
    workspace_id: str = Field(max_length=128)
    kind: str = Field(max_length=32)  # daily_usage
    start: int = Field(sa_type=BigInteger)
    end: int = Field(sa_type=BigInteger)
    json_path: str = Field(max_length=1024)  # relative to settings.reports_dir
    csv_path: str = Field(max_length=1024)
    created_at: int = Field(sa_type=BigInteger)
