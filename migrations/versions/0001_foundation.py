"""Foundation: service tokens, events, price versions.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(512), nullable=False),
        sa.Column("workspace_id", sa.String(128), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_table(
        "events",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.Column("workspace_id", sa.String(128), nullable=False),
        sa.Column("deployment_id", sa.String(128), nullable=False),
        sa.Column("sandbox_id", sa.String(128), nullable=True),
        sa.Column("run_id", sa.String(128), nullable=True),
        sa.Column("template", sa.String(128), nullable=True),
        sa.Column("minutes", sa.Integer(), nullable=True),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("source", "event_id", name="uq_events_source_id"),
    )
    op.create_index("ix_events_sandbox_time", "events", ["workspace_id", "sandbox_id", "time"])
    op.create_index("ix_events_workspace_type_time", "events", ["workspace_id", "type", "time"])
    op.create_table(
        "price_versions",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("effective_from", sa.BigInteger(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("effective_from", name="uq_price_versions_effective_from"),
    )


def downgrade() -> None:
    op.drop_table("price_versions")
    op.drop_index("ix_events_workspace_type_time", "events")
    op.drop_index("ix_events_sandbox_time", "events")
    op.drop_table("events")
    op.drop_table("api_tokens")
