"""Usage: billable intervals (split at month boundaries) and extensions, kept at ingest.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _owner_columns() -> list[sa.Column]:
    return [
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(128), nullable=False),
        sa.Column("deployment_id", sa.String(128), nullable=False),
        sa.Column("sandbox_id", sa.String(128), nullable=False),
        sa.Column("template", sa.String(128), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "usage_intervals",
        *_owner_columns(),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("end", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_usage_intervals_ws_start", "usage_intervals", ["workspace_id", "start"])
    op.create_index("ix_usage_intervals_ws_end", "usage_intervals", ["workspace_id", "end"])
    op.create_index("ix_usage_intervals_ws_sandbox", "usage_intervals", ["workspace_id", "sandbox_id"])
    op.create_index("ix_usage_intervals_start", "usage_intervals", ["start"])
    op.create_index("ix_usage_intervals_end", "usage_intervals", ["end"])
    op.create_table(
        "usage_extensions",
        *_owner_columns(),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    op.create_index("ix_usage_extensions_ws_time", "usage_extensions", ["workspace_id", "time"])
    op.create_index("ix_usage_extensions_ws_sandbox", "usage_extensions", ["workspace_id", "sandbox_id"])
    op.create_index("ix_usage_extensions_time", "usage_extensions", ["time"])


def downgrade() -> None:
    op.drop_table("usage_extensions")
    op.drop_table("usage_intervals")
