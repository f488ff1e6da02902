"""Sandbox fold state, so ingest derives usage incrementally (usage.derive).

The table is filled from the events already stored: each sandbox's events are folded in
order, exactly as ingest would have, so its state matches its stored usage rows.

Revision ID: 0006
Revises: 0005
"""

import itertools

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SANDBOX_TYPES = ("sandbox.provisioning", "sandbox.running", "sandbox.extended", "sandbox.stopped",
                 "sandbox.terminated")
CHUNK = 1000


def upgrade() -> None:
    states = op.create_table(
        "sandbox_states",
        sa.Column("workspace_id", sa.String(128), primary_key=True),
        sa.Column("sandbox_id", sa.String(128), primary_key=True),
        sa.Column("last_time", sa.BigInteger(), nullable=False),
        sa.Column("last_rank", sa.Integer(), nullable=False),
        sa.Column("last_source", sa.String(512), nullable=False),
        sa.Column("last_event_id", sa.String(128), nullable=False),
        sa.Column("open_start", sa.BigInteger(), nullable=True),
        sa.Column("open_template", sa.String(128), nullable=True),
        sa.Column("open_deployment", sa.String(128), nullable=True),
        sa.Column("terminated", sa.Boolean(), nullable=False),
        sqlite_with_rowid=False,  # the primary key is the table: one b-tree per write
    )
    _backfill(op.get_bind(), states)


def _backfill(conn: sa.engine.Connection, states: sa.Table) -> None:
    from metering.core.lifecycle import EVENT_RANK
    from metering.usage.derive import STATE_COLUMNS, Changes, Fold

    events = sa.table("events", *(sa.column(c) for c in (
        "workspace_id", "sandbox_id", "time", "type", "source", "event_id", "deployment_id", "template", "minutes")))
    query = sa.select(events).where(events.c.type.in_(SANDBOX_TYPES)).order_by(
        events.c.workspace_id, events.c.sandbox_id)
    rows = conn.execute(query, execution_options={"yield_per": CHUNK})  # streamed, not all in memory
    changes = Changes()
    for key, group in itertools.groupby(rows, key=lambda r: (r[0], r[1])):
        ordered = sorted((t, EVENT_RANK[ty], s, e, d, tpl, m) for _, _, t, ty, s, e, d, tpl, m in group)
        changes.apply(key, Fold(), ordered)
        if len(changes.states) >= CHUNK:
            _flush(conn, states, STATE_COLUMNS, changes)
            changes = Changes()
    _flush(conn, states, STATE_COLUMNS, changes)


def _flush(conn: sa.engine.Connection, states: sa.Table, columns: tuple[str, ...], changes) -> None:  # type: ignore[no-untyped-def]
    if changes.states:
        conn.execute(sa.insert(states), [dict(zip(columns, row)) for row in changes.states])


def downgrade() -> None:
    op.drop_table("sandbox_states")
