from __future__ import annotations

from sqlalchemy import BigInteger, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from metering.db.base import bigint_pk


class Budget(SQLModel, table=True):
    """A workspace's spending budget per billing period; thresholds in percent of ``amount``."""

    __tablename__ = "budgets"

    workspace_id: str = Field(primary_key=True, max_length=128)
    amount: int = Field(sa_type=BigInteger)  # micro-dollars
    thresholds: str = Field(sa_type=Text)  # ascending percents, comma separated: "50,80,100"
    updated_at: int = Field(sa_type=BigInteger)


class BudgetNotification(SQLModel, table=True):
    """A threshold crossed in a period: the unique key is what makes its webhook go out once,
    whichever instance and however many times the check runs."""

    __tablename__ = "budget_notifications"
    __table_args__ = (UniqueConstraint("workspace_id", "period_start", "threshold", name="uq_budget_notifications"),)

    id: int | None = bigint_pk()
    workspace_id: str = Field(max_length=128)
    period_start: int = Field(sa_type=BigInteger)
    threshold: int
    amount: int = Field(sa_type=BigInteger)  # the budget when it was crossed
    spent: int = Field(sa_type=BigInteger)  # what the check saw
    created_at: int = Field(sa_type=BigInteger)


class OverrunNotification(SQLModel, table=True):
    """A running interval seen past its lifetime: one ``sandbox.overrun`` webhook per interval."""

    __tablename__ = "overrun_notifications"
    __table_args__ = (UniqueConstraint("workspace_id", "sandbox_id", "started", name="uq_overrun_notifications"),)

    id: int | None = bigint_pk()
    workspace_id: str = Field(max_length=128)
    sandbox_id: str = Field(max_length=128)
    started: int = Field(sa_type=BigInteger)
    lifetime_end: int = Field(sa_type=BigInteger)
    created_at: int = Field(sa_type=BigInteger)
