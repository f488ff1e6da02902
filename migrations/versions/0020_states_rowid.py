"""Sandbox states in a rowid table on SQLite (issue 18).

WITHOUT ROWID, a state row (~1 KB with its history tail) lives in its key's place, a few to a
page: each new sandbox went to a page of its own among the others, splitting it now and then,
and a commit wrote about a page for every sandbox it touched.  In a rowid table new rows go to
the last pages, side by side, and only the key's small entries are spread out.

The table is copied whole, before the service starts (scripts/serve.sh migrates first): 10.7 s
for 300,000 sandboxes with full history tails (321 MB) on the machine of 2026-12-04.

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def _rebuild(*, with_rowid: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    new = op.create_table(
        "sandbox_states_new",
        sa.Column("workspace_id", sa.String(128), primary_key=True),
        sa.Column("sandbox_id", sa.String(128), primary_key=True),
        sa.Column("last_time", sa.BigInteger(), nullable=False),
        sa.Column("last_rank", sa.Integer(), nullable=False),
        sa.Column("last_source", sa.String(512), nullable=False),
        sa.Column("last_event_id", sa.String(128), nullable=False),
        sa.Column("open_start", sa.BigInteger()),
        sa.Column("open_template", sa.String(128)),
        sa.Column("open_deployment", sa.String(128)),
        sa.Column("terminated", sa.Boolean(), nullable=False),
        sa.Column("history", sa.Text(), nullable=False, server_default=""),
        sa.Column("open_lifetime_end", sa.BigInteger()),
        sa.Column("history_events", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("history_chunks", sa.Integer(), nullable=False, server_default="0"),
        sqlite_with_rowid=with_rowid,
    )
    columns = ", ".join(column.name for column in new.columns)
    op.execute(f"INSERT INTO sandbox_states_new ({columns}) SELECT {columns} FROM sandbox_states "
               "ORDER BY workspace_id, sandbox_id")
    op.drop_table("sandbox_states")
    op.rename_table("sandbox_states_new", "sandbox_states")


def upgrade() -> None:
    _rebuild(with_rowid=True)


def downgrade() -> None:
    _rebuild(with_rowid=False)
