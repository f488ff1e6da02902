"""Invoices, lines, billing runs, the invoice-number counter, usage marks, and triggers
that keep a finalized invoice immutable whatever code touches the database.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
FROZEN = "finalized invoices are immutable"

# An update of a non-draft invoice may only move finalized <-> paid or finalized -> void.
_CHANGED = " OR ".join(
    f"NEW.{c} IS DISTINCT FROM OLD.{c}"
    for c in ("workspace_id", "period_start", "period_end", "number", "subtotal", "credits", "total", "finalized_at")
)
_BAD_MOVE = (
    "OLD.status <> 'draft' AND (" + _CHANGED + " OR OLD.status = 'void'"
    " OR (NEW.status IS DISTINCT FROM OLD.status AND NOT ("
    "(OLD.status = 'finalized' AND NEW.status IN ('paid', 'void')) OR (OLD.status = 'paid' AND NEW.status = 'finalized'))))"
)
_LINE_FROZEN = "(SELECT status FROM invoices WHERE id = {row}.invoice_id) <> 'draft'"


def _sqlite_triggers() -> None:
    bad_move = _BAD_MOVE.replace("IS DISTINCT FROM", "IS NOT")
    op.execute(f"CREATE TRIGGER invoices_frozen_update BEFORE UPDATE ON invoices WHEN {bad_move} "
               f"BEGIN SELECT RAISE(ABORT, '{FROZEN}'); END")
    op.execute(f"CREATE TRIGGER invoices_frozen_delete BEFORE DELETE ON invoices WHEN OLD.status <> 'draft' "
               f"BEGIN SELECT RAISE(ABORT, '{FROZEN}'); END")
    for event, row in (("INSERT", "NEW"), ("UPDATE", "OLD"), ("DELETE", "OLD")):
        op.execute(f"CREATE TRIGGER invoice_lines_frozen_{event.lower()} BEFORE {event} ON invoice_lines "
                   f"WHEN {_LINE_FROZEN.format(row=row)} BEGIN SELECT RAISE(ABORT, '{FROZEN}'); END")


def _postgres_triggers() -> None:
    op.execute(f"""
        CREATE FUNCTION invoices_frozen() RETURNS trigger AS $$
        BEGIN
          IF TG_OP = 'DELETE' THEN
            IF OLD.status <> 'draft' THEN RAISE EXCEPTION '{FROZEN}'; END IF;
            RETURN OLD;
          END IF;
          IF {_BAD_MOVE} THEN RAISE EXCEPTION '{FROZEN}'; END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql""")
    op.execute("CREATE TRIGGER invoices_frozen BEFORE UPDATE OR DELETE ON invoices "
               "FOR EACH ROW EXECUTE FUNCTION invoices_frozen()")
    op.execute(f"""
        CREATE FUNCTION invoice_lines_frozen() RETURNS trigger AS $$
        BEGIN
          IF TG_OP = 'INSERT' THEN
            IF {_LINE_FROZEN.format(row="NEW")} THEN RAISE EXCEPTION '{FROZEN}'; END IF;
            RETURN NEW;
          END IF;
          IF {_LINE_FROZEN.format(row="OLD")} THEN RAISE EXCEPTION '{FROZEN}'; END IF;
          IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql""")
    op.execute("CREATE TRIGGER invoice_lines_frozen BEFORE INSERT OR UPDATE OR DELETE ON invoice_lines "
               "FOR EACH ROW EXECUTE FUNCTION invoice_lines_frozen()")


def upgrade() -> None:
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace_id", sa.String(128), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("period_end", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("number", sa.String(32), nullable=True),
        sa.Column("subtotal", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("credits", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("total", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("finalized_at", sa.BigInteger(), nullable=True),
        sa.Column("paid_at", sa.BigInteger(), nullable=True),
        sa.Column("voided_at", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("workspace_id", "period_start", name="uq_invoices_workspace_period"),
        sa.UniqueConstraint("number", name="uq_invoices_number"),
        sa.CheckConstraint("status IN ('draft', 'finalized', 'paid', 'void')", name="ck_invoices_status"),
    )
    op.create_index("ix_invoices_status_period", "invoices", ["status", "period_start"])
    op.create_table(
        "invoice_lines",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("invoice_id", sa.String(40), sa.ForeignKey("invoices.id"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("usage_kind", sa.String(16), nullable=True),
        sa.Column("deployment_id", sa.String(128), nullable=True),
        sa.Column("template", sa.String(128), nullable=True),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("unit_price", sa.String(32), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("original_period_start", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_invoice_lines_invoice", "invoice_lines", ["invoice_id", "position"])
    op.create_table(
        "billing_runs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("period_end", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("invoices", sa.Integer(), nullable=False),
        sa.Column("finalized", sa.Integer(), nullable=False),
    )
    op.create_table(
        "counters",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    op.execute("INSERT INTO counters (name, value) VALUES ('invoice', 0)")
    op.create_table(
        "usage_marks",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(128), nullable=False),
        sa.Column("since", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_usage_marks_workspace", "usage_marks", ["workspace_id", "since"])
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_triggers()
    else:
        _postgres_triggers()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS invoice_lines_frozen ON invoice_lines")
        op.execute("DROP TRIGGER IF EXISTS invoices_frozen ON invoices")
        op.execute("DROP FUNCTION IF EXISTS invoice_lines_frozen()")
        op.execute("DROP FUNCTION IF EXISTS invoices_frozen()")
    for table in ("usage_marks", "counters", "billing_runs", "invoice_lines", "invoices"):
        op.drop_table(table)
