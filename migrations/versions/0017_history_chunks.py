"""A sandbox's history in sealed chunks plus a short tail, so an event's cost does not grow
with its sandbox's age (usage.derive, issue 18).

The history stored so far stays whole in ``sandbox_states.history`` (its tail): the next
event in order seals it as the sandbox's first chunk.  Only its event count is filled here.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

CHUNK = 1_000


def upgrade() -> None:
    op.create_table(
        "sandbox_history_chunks",
        sa.Column("workspace_id", sa.String(128), primary_key=True),
        sa.Column("sandbox_id", sa.String(128), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("events", sa.Text(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.add_column("sandbox_states", sa.Column("history_events", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("sandbox_states", sa.Column("history_chunks", sa.Integer(), nullable=False, server_default="0"))
    _count_events(op.get_bind())


def _count_events(conn: sa.engine.Connection) -> None:
    from metering.usage.derive import parse_history

    states = sa.table("sandbox_states", sa.column("workspace_id"), sa.column("sandbox_id"), sa.column("history"),
                      sa.column("history_events"))
    rows = conn.execute(sa.select(states.c.workspace_id, states.c.sandbox_id, states.c.history)
                        .where(states.c.history != "")).fetchall()
    counts = [{"ws": ws, "sb": sb, "n": len(parse_history(text))} for ws, sb, text in rows]
    update = sa.update(states).where(states.c.workspace_id == sa.bindparam("ws"),
                                     states.c.sandbox_id == sa.bindparam("sb")).values(history_events=sa.bindparam("n"))
    for lo in range(0, len(counts), CHUNK):
        conn.execute(update, counts[lo:lo + CHUNK])


def downgrade() -> None:
    # Each sandbox's chunks and tail back into one history.
    conn = op.get_bind()
    chunks = conn.execute(sa.text("SELECT workspace_id, sandbox_id, events FROM sandbox_history_chunks "
                                  "ORDER BY workspace_id, sandbox_id, seq")).fetchall()
    sealed: dict[tuple[str, str], str] = {}
    for ws, sb, events in chunks:
        sealed[(ws, sb)] = sealed.get((ws, sb), "") + events
    update = sa.text("UPDATE sandbox_states SET history = :head || history WHERE workspace_id = :ws AND sandbox_id = :sb")
    for (ws, sb), head in sealed.items():
        conn.execute(update, {"head": head, "ws": ws, "sb": sb})
    op.drop_table("sandbox_history_chunks")
    op.execute("ALTER TABLE sandbox_states DROP COLUMN history_chunks")
    op.execute("ALTER TABLE sandbox_states DROP COLUMN history_events")
