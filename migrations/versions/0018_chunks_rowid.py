"""Sandbox history chunks in a rowid table on SQLite (issue 18).

Chunks are appended, never updated.  WITHOUT ROWID, each ~1 KB row went into the primary
key's b-tree beside its sandbox's other chunks, a few rows to a page, and an ingest commit
wrote 870 of its 3,200 pages for them (4,000 events of the callers' stream, bench.commit_pages).
In a rowid table the rows go to the last pages and only the key's small entries are spread
out: 0.80 to 0.60 pages an event.  PostgreSQL stores every table this way already.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

COLUMNS = "workspace_id, sandbox_id, seq, events"


def _rebuild(*, with_rowid: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.create_table(
        "sandbox_history_chunks_new",
        sa.Column("workspace_id", sa.String(128), primary_key=True),
        sa.Column("sandbox_id", sa.String(128), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("events", sa.Text(), nullable=False),
        sqlite_with_rowid=with_rowid,
    )
    op.execute(f"INSERT INTO sandbox_history_chunks_new ({COLUMNS}) SELECT {COLUMNS} FROM sandbox_history_chunks "
               "ORDER BY workspace_id, sandbox_id, seq")
    op.drop_table("sandbox_history_chunks")
    op.rename_table("sandbox_history_chunks_new", "sandbox_history_chunks")


def upgrade() -> None:
    _rebuild(with_rowid=True)


def downgrade() -> None:
    _rebuild(with_rowid=False)
