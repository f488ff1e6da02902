"""The audit trail: one hash-chained, append-only log of every change of money or access."""

from __future__ import annotations

from sqlalchemy import BigInteger, Text
from sqlmodel import Field, SQLModel

# The kinds of entry (CONTRACT 11). ``subject`` names what changed; ``data`` is listed in
# README "Audit trail".
PRICE_VERSION_ADDED = "price_version.added"
INVOICE_FINALIZED = "invoice.finalized"
INVOICE_VOIDED = "invoice.voided"
INVOICE_PAID = "invoice.paid"
INVOICE_UNPAID = "invoice.unpaid"  # a paid invoice back to finalized: its payment was reorged
SETTLEMENT_CONFIRMED = "settlement.confirmed"
SETTLEMENT_REJECTED = "settlement.rejected"
SETTLEMENT_REORGED = "settlement.reorged"
ADJUSTMENT_BILLED = "adjustment.billed"
BUDGET_SET = "budget.set"
BUDGET_DELETED = "budget.deleted"
TOKEN_CREATED = "token.created"
TOKEN_REVOKED = "token.revoked"

# The counters row whose value is the last seq: locked by the UPDATE that takes the next one,
# so appends are serialized (and gap-free) across transactions and instances.
COUNTER = "audit"


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    seq: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    at: str = Field(max_length=32)  # YYYY-MM-DDTHH:MM:SS.ffffffZ, always six digits: sorts as text
    kind: str = Field(max_length=40)
    subject: str = Field(max_length=200)
    data: str = Field(sa_type=Text)  # canonical JSON of the entry's data
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
