"""Settlements remember which payload they checked (``payload_hash``).

A report is "the same" as a stored one only when its payload, transaction and purpose
all match; the payload is compared by this fingerprint of its decoded fields.  Rows
stored before it have none and are compared by their payment columns instead.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("settlements", sa.Column("payload_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("settlements", "payload_hash")
