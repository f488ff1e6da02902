"""Settlements: x402 payments reported by resource servers and verified on chain.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# A payment settles once among live settlements; rejected or reorged ones settled nothing.
LIVE_ONLY = sa.text("status IN ('pending', 'confirmed')")


def upgrade() -> None:
    op.create_table(
        "settlements",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("network", sa.String(64), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("transaction", sa.String(66), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", sa.String(66), nullable=True),
        sa.Column("payer", sa.String(42), nullable=False),
        sa.Column("pay_to", sa.String(42), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("nonce", sa.String(66), nullable=False),
        sa.Column("valid_before", sa.BigInteger(), nullable=False),
        sa.Column("x402_version", sa.Integer(), nullable=False),
        sa.Column("purpose_kind", sa.String(16), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("workspace_id", sa.String(128), nullable=True),
        sa.Column("invoice_id", sa.String(128), nullable=True),
        sa.Column("run_id", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("last_error", sa.String(512), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_check_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("confirmed_at", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "uq_settlements_payment", "settlements", ["chain_id", "payer", "nonce"], unique=True,
        sqlite_where=LIVE_ONLY, postgresql_where=LIVE_ONLY,
    )
    op.create_index(
        "uq_settlements_transfer", "settlements", ["chain_id", "transaction", "log_index"], unique=True,
        sqlite_where=LIVE_ONLY, postgresql_where=LIVE_ONLY,
    )
    op.create_index("ix_settlements_due", "settlements", ["status", "next_check_at"])
    op.create_index("ix_settlements_workspace", "settlements", ["workspace_id", "created_at"])
    op.create_index("ix_settlements_invoice", "settlements", ["invoice_id"])
    op.create_index("ix_settlements_payer", "settlements", ["payer", "created_at"])
    op.create_index("ix_settlements_created", "settlements", ["created_at", "id"])


def downgrade() -> None:
    for name in (
        "ix_settlements_created",
        "ix_settlements_payer",
        "ix_settlements_invoice",
        "ix_settlements_workspace",
        "ix_settlements_due",
        "uq_settlements_transfer",
        "uq_settlements_payment",
    ):
        op.drop_index(name, "settlements")
    op.drop_table("settlements")
