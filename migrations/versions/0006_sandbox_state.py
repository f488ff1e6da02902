"""Sandbox fold state, so ingest derives usage incrementally (usage.derive).

The table is filled from the events already stored: each sandbox's events are folded in
order, exactly as ingest would have, so its state matches its stored usage rows.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

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
    from metering.usage.derive import FOLD_COLUMNS, Changes, Fold, stored_lifecycles

    changes = Changes()
    for key, ordered in stored_lifecycles(conn, CHUNK):
        changes.apply(key, Fold(), ordered)
        if len(changes.states) >= CHUNK:
            _flush(conn, states, FOLD_COLUMNS, changes)
            changes = Changes()
    _flush(conn, states, FOLD_COLUMNS, changes)


def _flush(conn: sa.engine.Connection, states: sa.Table, columns: tuple[str, ...], changes) -> None:  # type: ignore[no-untyped-def]
    if changes.states:  # zip keeps the columns of this revision (0010 adds the history)
        conn.execute(sa.insert(states), [dict(zip(columns, row)) for row in changes.states])


def downgrade() -> None:
    op.drop_table("sandbox_states")
