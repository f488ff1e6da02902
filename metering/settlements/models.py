from __future__ import annotations

from sqlalchemy import BigInteger, Index, Text, text
from sqlmodel import Field, SQLModel


class Status:
    PENDING = "pending"  # not mined, not final enough, or the RPC could not answer
    CONFIRMED = "confirmed"  # on chain, at or below the configured finality
    REJECTED = "rejected"  # a check failed; ``reason`` says which
    REORGED = "reorged"  # was confirmed, then its block left the canonical chain

    ALL = (PENDING, CONFIRMED, REJECTED, REORGED)
    # Asked again by the scheduler: pending until the chain decides, confirmed for a reorg
    # until final, reorged until its transaction is mined again or can no longer be.
    WATCHED = (PENDING, CONFIRMED, REORGED)
    # A payment may be settled by one live settlement; rejected and reorged ones settled
    # nothing, so they do not hold the payment's keys (a fixed report may follow).
    LIVE = (PENDING, CONFIRMED)
    FINAL = (CONFIRMED, REJECTED, REORGED)


class Reason:
    NETWORK_NOT_CONFIGURED = "network_not_configured"
    CHAIN_ID_MISMATCH = "chain_id_mismatch"
    ASSET_MISMATCH = "asset_mismatch"
    INVALID_SIGNATURE = "invalid_signature"
    PAY_TO_NOT_ACCEPTED = "pay_to_not_accepted"
    AMOUNT_MISMATCH = "amount_mismatch"
    EXPIRED = "expired"
    TRANSACTION_FAILED = "transaction_failed"
    LOGS_MISSING = "logs_missing"
    AUTHORIZATION_NOT_USED = "authorization_not_used"
    NONCE_MISMATCH = "nonce_mismatch"
    TRANSFER_MISMATCH = "transfer_mismatch"
    TRANSFER_ALREADY_SETTLED = "transfer_already_settled"
    BLOCK_NOT_CANONICAL = "block_not_canonical"  # with status reorged
    # Failures on the operator's side, not the payment's: reporting again re-checks them
    # (a network missing or switched off, an RPC on another chain).
    OPERATOR_SIDE = (NETWORK_NOT_CONFIGURED, CHAIN_ID_MISMATCH)


_LIVE_ONLY = text("status IN ('pending', 'confirmed')")


class Settlement(SQLModel, table=True):
    """One reported x402 payment and what the chain says about it."""

    __tablename__ = "settlements"
    __table_args__ = (
        # (chain, payer, nonce) and (chain, tx, Transfer log) settle once: unique among
        # live settlements (partial indexes, on SQLite and PostgreSQL alike).
        Index(
            "uq_settlements_payment", "chain_id", "payer", "nonce", unique=True,
            sqlite_where=_LIVE_ONLY, postgresql_where=_LIVE_ONLY,
        ),
        Index(
            "uq_settlements_transfer", "chain_id", "transaction", "log_index", unique=True,
            sqlite_where=_LIVE_ONLY, postgresql_where=_LIVE_ONLY,
        ),
        Index("ix_settlements_due", "status", "next_check_at"),
        Index("ix_settlements_workspace", "workspace_id", "created_at"),
        Index("ix_settlements_invoice", "invoice_id"),
        Index("ix_settlements_payer", "payer", "created_at"),
        Index("ix_settlements_created", "created_at", "id"),
    )

    id: str = Field(primary_key=True, max_length=40)  # stl_<hex>
    network: str = Field(max_length=64)  # CAIP-2
    chain_id: int = Field(sa_type=BigInteger)
    transaction: str = Field(max_length=66)  # lowercase 0x hex
    log_index: int | None = Field(default=None)  # of the Transfer log, once seen
    block_number: int | None = Field(default=None, sa_type=BigInteger)
    block_hash: str | None = Field(default=None, max_length=66)
    payer: str = Field(max_length=42)  # lowercase
    pay_to: str = Field(max_length=42)  # lowercase
    amount: int = Field(sa_type=BigInteger)  # micro-dollars = USDC base units
    nonce: str = Field(max_length=66)  # lowercase 0x + 32 bytes
    valid_before: int = Field(sa_type=BigInteger)  # unix seconds (capped at 2^63-1)
    x402_version: int
    # sha256 of the decoded payload (Payment.fingerprint); None on rows older than it.
    payload_hash: str | None = Field(default=None, max_length=64)
    purpose_kind: str = Field(max_length=16)  # run | invoice | credit
    purpose: str = Field(sa_type=Text)  # the purpose object as JSON
    workspace_id: str | None = Field(default=None, max_length=128)
    invoice_id: str | None = Field(default=None, max_length=128)
    run_id: str | None = Field(default=None, max_length=128)
    status: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=64)
    last_error: str | None = Field(default=None, max_length=512)
    attempts: int = 0  # chain checks made
    next_check_at: int | None = Field(default=None, sa_type=BigInteger)  # None: nothing left to check
    created_at: int = Field(sa_type=BigInteger)
    confirmed_at: int | None = Field(default=None, sa_type=BigInteger)
    updated_at: int = Field(sa_type=BigInteger)
