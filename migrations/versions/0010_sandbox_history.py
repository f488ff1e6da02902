"""Each sandbox's lifecycle history in its state row, instead of indexes keyed by sandbox.

Re-deriving a sandbox after a late event used to read its events through
``ix_events_sandbox_time`` and delete its usage rows through the two ``*_ws_sandbox``
indexes.  Those indexes cost every event a random-order b-tree insert (and, on a big
table, a dirty page at commit) for a lookup only late events need.  The state row now
keeps the events' fold fields (usage.derive), and usage rows are deleted by their own
keys through the workspace/time indexes.

The history is filled from the events already stored, before the index that finds them
by sandbox is dropped.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

CHUNK = 1000
DROPPED = (
    ("ix_events_sandbox_time", "events", ["workspace_id", "sandbox_id", "time"]),
    ("ix_usage_intervals_ws_sandbox", "usage_intervals", ["workspace_id", "sandbox_id"]),
    ("ix_usage_extensions_ws_sandbox", "usage_extensions", ["workspace_id", "sandbox_id"]),
)


def upgrade() -> None:
    op.add_column("sandbox_states", sa.Column("history", sa.Text(), nullable=False, server_default=""))
    _backfill(op.get_bind())
    for name, table, _ in DROPPED:
        op.drop_index(name, table)


def _backfill(conn: sa.engine.Connection) -> None:
    from metering.usage.derive import history_text, stored_lifecycles

    states = sa.table("sandbox_states", sa.column("workspace_id"), sa.column("sandbox_id"), sa.column("history"))
    update = sa.update(states).where(states.c.workspace_id == sa.bindparam("ws"),
                                     states.c.sandbox_id == sa.bindparam("sb")).values(history=sa.bindparam("h"))
    pending: list[dict] = []
    for (ws, sb), ordered in stored_lifecycles(conn, CHUNK):
        pending.append({"ws": ws, "sb": sb, "h": history_text(ordered)})
        if len(pending) >= CHUNK:
            conn.execute(update, pending)
            pending = []
    if pending:
        conn.execute(update, pending)


def downgrade() -> None:
    for name, table, columns in DROPPED:
        op.create_index(name, table, columns)
    op.execute("ALTER TABLE sandbox_states DROP COLUMN history")
