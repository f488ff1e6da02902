"""Invoices, their lines, billing runs and the gap-free number counter."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from metering.db.base import bigint_pk

STATUSES = ("draft", "finalized", "paid", "void")
# carried_credit: credit carried from earlier negative subtotals, applied (negative);
# carry_forward: a negative subtotal moved to the workspace's carried credit (positive).
LINE_KINDS = ("running", "extension", "adjustment", "carried_credit", "credit", "carry_forward")


class Invoice(SQLModel, table=True):
    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("workspace_id", "period_start", name="uq_invoices_workspace_period"),
        UniqueConstraint("number", name="uq_invoices_number"),
        Index("ix_invoices_status_period", "status", "period_start"),
    )

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(max_length=128)
    period_start: int = Field(sa_type=BigInteger)
    period_end: int = Field(sa_type=BigInteger)
    status: str = Field(max_length=16)
    number: str | None = Field(default=None, max_length=32)
    subtotal: int = Field(default=0, sa_type=BigInteger)  # micro-dollars
    credits: int = Field(default=0, sa_type=BigInteger)  # credit applied (carried + prepaid), positive
    total: int = Field(default=0, sa_type=BigInteger)  # subtotal - credits + carried_forward = sum of the lines
    created_at: int = Field(sa_type=BigInteger)
    updated_at: int = Field(sa_type=BigInteger)
    finalized_at: int | None = Field(default=None, sa_type=BigInteger)
    paid_at: int | None = Field(default=None, sa_type=BigInteger)
    voided_at: int | None = Field(default=None, sa_type=BigInteger)
    carried_credit: int = Field(default=0, sa_type=BigInteger)  # the part of ``credits`` carried from before
    carried_forward: int = Field(default=0, sa_type=BigInteger)  # -subtotal when negative, else 0


class InvoiceLine(SQLModel, table=True):
    __tablename__ = "invoice_lines"
    __table_args__ = (Index("ix_invoice_lines_invoice", "invoice_id", "position"),)

    id: int | None = bigint_pk()
    invoice_id: str = Field(foreign_key="invoices.id", max_length=40)
    position: int
    kind: str = Field(max_length=16)
    # For adjustment lines, the kind of usage adjusted (running or extension).
    usage_kind: str | None = Field(default=None, max_length=16)
    deployment_id: str | None = Field(default=None, max_length=128)
    template: str | None = Field(default=None, max_length=128)
    quantity: int = Field(default=0, sa_type=BigInteger)  # microseconds (running) or a count
    unit_price: str | None = Field(default=None, max_length=32)  # exact decimal dollars
    amount: int = Field(sa_type=BigInteger)  # micro-dollars, rounded once
    description: str = Field(sa_type=Text)
    original_period_start: int | None = Field(default=None, sa_type=BigInteger)


class BillingRun(SQLModel, table=True):
    __tablename__ = "billing_runs"

    id: str = Field(primary_key=True, max_length=40)
    period_start: int = Field(sa_type=BigInteger)
    period_end: int = Field(sa_type=BigInteger)
    started_at: int = Field(sa_type=BigInteger)
    finished_at: int | None = Field(default=None, sa_type=BigInteger)
    invoices: int = 0
    finalized: int = 0
    final: bool = False  # it finalized the period: once one has finished, the period is closed


class Counter(SQLModel, table=True):
    """Gap-free sequences: incremented inside the transaction that uses the value."""

    __tablename__ = "counters"

    name: str = Field(primary_key=True, max_length=32)
    value: int = Field(default=0, sa_type=BigInteger)

