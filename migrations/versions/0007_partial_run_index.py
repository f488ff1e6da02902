"""Index only run events by (workspace, time): lifecycle events skip an index at ingest.

``ix_events_workspace_type_time`` indexed every event, though only run events are read
through it (daily reports count them).  Random-order inserts into it cost SQLite ingest a
third of its time (BENCHMARKS.md).  The partial index carries the same lookups for run events.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Frozen here as the migration wrote it; the model builds the same text from RUN_TYPES.
IS_RUN_EVENT = sa.text("type IN ('run.queued', 'run.running', 'run.completed', 'run.failed')")


def upgrade() -> None:
    op.drop_index("ix_events_workspace_type_time", "events")
    op.create_index("ix_events_runs", "events", ["workspace_id", "time", "type"],
                    sqlite_where=IS_RUN_EVENT, postgresql_where=IS_RUN_EVENT)


def downgrade() -> None:
    op.drop_index("ix_events_runs", "events")
    op.create_index("ix_events_workspace_type_time", "events", ["workspace_id", "type", "time"])
