"""Scheduler leases and job runs, daily reports, the webhook outbox and its deliveries.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "job_runs",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(64), nullable=False),
        sa.Column("key", sa.String(256), nullable=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_job_runs_job_started", "job_runs", ["job", "started_at"])

    op.create_table(
        "reports",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("end", sa.BigInteger(), nullable=False),
        sa.Column("json_path", sa.String(1024), nullable=False),
        sa.Column("csv_path", sa.String(1024), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("workspace_id", "kind", "start", name="uq_reports_workspace_kind_start"),
    )
    op.create_index("ix_reports_start_id", "reports", ["start", "id"])
    op.create_index("ix_reports_ws_start_id", "reports", ["workspace_id", "start", "id"])

    op.create_table(
        "outbox",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(40), nullable=False, unique=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("outbox_id", sa.BigInteger(), sa.ForeignKey("outbox.id"), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("secret_env", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.String(512), nullable=True),
        sa.Column("delivered_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("outbox_id", "url", name="uq_deliveries_outbox_url"),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_due", "deliveries")
    op.drop_table("deliveries")
    op.drop_table("outbox")
    op.drop_index("ix_reports_ws_start_id", "reports")
    op.drop_index("ix_reports_start_id", "reports")
    op.drop_table("reports")
    op.drop_index("ix_job_runs_job_started", "job_runs")
    op.drop_table("job_runs")
    op.drop_table("job_leases")
