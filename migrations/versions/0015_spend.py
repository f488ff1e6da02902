"""Spend control: budgets, their notifications, overrun notifications, and lifetime ends.

``usage_intervals.lifetime_end`` and ``sandbox_states.open_lifetime_end`` carry when each
running interval's paid lifetime ends (15 minutes plus its extensions, usage.derive); the
rows already stored get theirs from the sandboxes' stored histories.

Revision ID: 0015
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None

CHUNK = 1000


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("workspace_id", sa.String(128), primary_key=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("thresholds", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "budget_notifications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(128), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("workspace_id", "period_start", "threshold", name="uq_budget_notifications"),
    )
    op.create_table(
        "overrun_notifications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(128), nullable=False),
        sa.Column("sandbox_id", sa.String(128), nullable=False),
        sa.Column("started", sa.BigInteger(), nullable=False),
        sa.Column("lifetime_end", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("workspace_id", "sandbox_id", "started", name="uq_overrun_notifications"),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("token_id", sa.String(40), nullable=False),
        sa.Column("workspace_id", sa.String(128), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.add_column("usage_intervals", sa.Column("lifetime_end", sa.BigInteger(), nullable=True))
    op.add_column("sandbox_states", sa.Column("open_lifetime_end", sa.BigInteger(), nullable=True))
    _backfill(op.get_bind())


def _backfill(conn: sa.engine.Connection) -> None:
    from metering.usage.derive import STATE_COLUMNS, Changes, Fold, parse_history

    states = sa.table("sandbox_states", sa.column("workspace_id"), sa.column("sandbox_id"), sa.column("history"),
                      sa.column("open_lifetime_end"))
    intervals = sa.table("usage_intervals", sa.column("workspace_id"), sa.column("sandbox_id"), sa.column("start"),
                         sa.column("lifetime_end"))
    set_interval = sa.update(intervals).where(
        intervals.c.workspace_id == sa.bindparam("ws"), intervals.c.start == sa.bindparam("s"),
        intervals.c.sandbox_id == sa.bindparam("sb")).values(lifetime_end=sa.bindparam("life"))
    set_state = sa.update(states).where(
        states.c.workspace_id == sa.bindparam("ws"), states.c.sandbox_id == sa.bindparam("sb")
    ).values(open_lifetime_end=sa.bindparam("life"))
    rows = conn.execute(sa.select(states.c.workspace_id, states.c.sandbox_id, states.c.history),
                        execution_options={"yield_per": CHUNK})
    changes = Changes()
    for ws, sb, history in rows:
        changes.apply((ws, sb), Fold(), parse_history(history))
    ivs = [{"ws": iv[0], "sb": iv[2], "s": iv[4], "life": iv[6]} for iv in changes.intervals]
    life = STATE_COLUMNS.index("open_lifetime_end")
    sts = [{"ws": st[0], "sb": st[1], "life": st[life]} for st in changes.states if st[life] is not None]
    for i in range(0, len(ivs), CHUNK):
        conn.execute(set_interval, ivs[i:i + CHUNK])
    for i in range(0, len(sts), CHUNK):
        conn.execute(set_state, sts[i:i + CHUNK])


def downgrade() -> None:
    op.execute("ALTER TABLE sandbox_states DROP COLUMN open_lifetime_end")
    op.execute("ALTER TABLE usage_intervals DROP COLUMN lifetime_end")
    op.drop_table("web_sessions")
    op.drop_table("overrun_notifications")
    op.drop_table("budget_notifications")
    op.drop_table("budgets")
