"""The audit trail (CONTRACT 11): one hash-chained log, and its seq counter.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    # The last seq taken; its row lock serializes appends (audit.service).
    op.execute("INSERT INTO counters (name, value) VALUES ('audit', 0)")


def downgrade() -> None:
    op.execute("DELETE FROM counters WHERE name = 'audit'")
    op.drop_table("audit_log")
