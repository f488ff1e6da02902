"""Late usage is tracked by changed day, and an invoice never goes below zero.

- ``usage_changed_days``: ingest records each (workspace, UTC day) whose usage changed after
  the day ended; billing turns them into adjustments on the current period's draft and
  deletes them (usage.derive, invoices.late).  It replaces ``usage_marks``, whose pending
  rows become changed days here, from their ``since`` up to today.
- ``billing_runs.final``: the run finalized its period; a period is closed once a final run
  of it finished.  Runs before this migration count as final if they started an hour (the
  default grace) after their period ended.
- ``invoices.carried_credit`` (carried credit applied, part of ``credits``) and
  ``invoices.carried_forward`` (a negative subtotal moved to the workspace's credit), both
  frozen with the rest of a finalized invoice: the triggers of 0004 are made again with them.

Revision ID: 0012
Revises: 0010
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None

DAY_US = 86_400_000_000
GRACE_US = 3_600_000_000
FROZEN = "finalized invoices are immutable"
OLD_FROZEN_COLUMNS = ("workspace_id", "period_start", "period_end", "number", "subtotal", "credits", "total",
                      "finalized_at")
NEW_FROZEN_COLUMNS = (*OLD_FROZEN_COLUMNS, "carried_credit", "carried_forward")


def _bad_move(columns: tuple[str, ...]) -> str:
    # As in 0004: an update of a non-draft invoice may only move finalized <-> paid or finalized -> void.
    changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in columns)
    return (
        "OLD.status <> 'draft' AND (" + changed + " OR OLD.status = 'void'"
        " OR (NEW.status IS DISTINCT FROM OLD.status AND NOT ("
        "(OLD.status = 'finalized' AND NEW.status IN ('paid', 'void')) OR (OLD.status = 'paid' AND NEW.status = 'finalized'))))"
    )


def _freeze(columns: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER invoices_frozen_update")
        bad_move = _bad_move(columns).replace("IS DISTINCT FROM", "IS NOT")
        op.execute(f"CREATE TRIGGER invoices_frozen_update BEFORE UPDATE ON invoices WHEN {bad_move} "
                   f"BEGIN SELECT RAISE(ABORT, '{FROZEN}'); END")
        return
    op.execute(f"""
        CREATE OR REPLACE FUNCTION invoices_frozen() RETURNS trigger AS $$
        BEGIN
          IF TG_OP = 'DELETE' THEN
            IF OLD.status <> 'draft' THEN RAISE EXCEPTION '{FROZEN}'; END IF;
            RETURN OLD;
          END IF;
          IF {_bad_move(columns)} THEN RAISE EXCEPTION '{FROZEN}'; END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql""")


def _marks_to_days(conn: sa.engine.Connection) -> None:
    today = time.time_ns() // 1000 // DAY_US * DAY_US
    rows = conn.execute(sa.text("SELECT workspace_id, MIN(since) FROM usage_marks GROUP BY workspace_id")).all()
    days = [{"ws": ws, "day": day} for ws, since in rows for day in range(since - since % DAY_US, today, DAY_US)]
    if days:
        conn.execute(sa.text("INSERT INTO usage_changed_days (workspace_id, day, version) VALUES (:ws, :day, 1)"), days)


def upgrade() -> None:
    op.create_table(
        "usage_changed_days",
        sa.Column("workspace_id", sa.String(128), primary_key=True),
        sa.Column("day", sa.BigInteger(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    _marks_to_days(op.get_bind())
    op.drop_index("ix_usage_marks_workspace", "usage_marks")
    op.drop_table("usage_marks")
    op.add_column("billing_runs", sa.Column("final", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(f"UPDATE billing_runs SET final = (started_at >= period_end + {GRACE_US})")
    for column in ("carried_credit", "carried_forward"):
        op.add_column("invoices", sa.Column(column, sa.BigInteger(), nullable=False, server_default="0"))
    _freeze(NEW_FROZEN_COLUMNS)


def downgrade() -> None:
    _freeze(OLD_FROZEN_COLUMNS)
    for column in ("carried_forward", "carried_credit"):
        op.execute(f"ALTER TABLE invoices DROP COLUMN {column}")
    op.execute("ALTER TABLE billing_runs DROP COLUMN final")
    op.create_table(
        "usage_marks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(128), nullable=False),
        sa.Column("since", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_usage_marks_workspace", "usage_marks", ["workspace_id", "since"])
    op.execute("INSERT INTO usage_marks (workspace_id, since) "
               "SELECT workspace_id, MIN(day) FROM usage_changed_days GROUP BY workspace_id")
    op.drop_table("usage_changed_days")
