"""Index the still-running intervals apart: closed ones (nearly all) skip two indexes.

``ix_usage_intervals_ws_end`` and ``ix_usage_intervals_end`` were read only for
``"end" IS NULL`` (the intervals still running), yet every closed interval had an entry in
both.  ``ix_usage_intervals_open`` on (workspace_id, start) WHERE "end" IS NULL serves those
lookups per workspace (usage queries, reports) and across all workspaces (billing
candidates, exports); ingest closing an interval finds it through (workspace_id, sandbox_id).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

IS_OPEN = sa.text('"end" IS NULL')


def upgrade() -> None:
    op.drop_index("ix_usage_intervals_ws_end", "usage_intervals")
    op.drop_index("ix_usage_intervals_end", "usage_intervals")
    op.create_index("ix_usage_intervals_open", "usage_intervals", ["workspace_id", "start"],
                    sqlite_where=IS_OPEN, postgresql_where=IS_OPEN)


def downgrade() -> None:
    op.drop_index("ix_usage_intervals_open", "usage_intervals")
    op.create_index("ix_usage_intervals_end", "usage_intervals", ["end"])
    op.create_index("ix_usage_intervals_ws_end", "usage_intervals", ["workspace_id", "end"])
