"""Room on PostgreSQL's pages for the rows ingest updates in place (issue 18).

Every ingest transaction upserts the state row of each sandbox it touches, and an extension
rewrites the open interval's ``lifetime_end``: a new row version each time.  PostgreSQL
writes it on the same page, touching no index (a HOT update), only when the page has room;
at the default fillfactor of 100 it rarely had (1,400 of 28,000 interval updates and 12,000 of
29,000 state updates were HOT, 1,000-event requests two to a commit, bench/), and each other
update inserted an entry in every index of the table and left a dead one behind.  With the
pages of these two tables kept part empty, almost all of them are HOT (28,000 and 29,100), and
PostgreSQL's CPU per event went from 52-56 to 46-51 us.

Pages written before this keep their rows as they are: the setting applies as pages fill.
SQLite updates rows in place whatever the page: nothing to do there.

Revision ID: 0019
Revises: 0018
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

# A state row is rewritten by almost every commit that touches its sandbox: half of each page
# is left for its next versions.  Intervals are updated only while open (the newest rows).
FILLFACTOR = {"sandbox_states": 50, "usage_intervals": 70}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, percent in FILLFACTOR.items():
        op.execute(f"ALTER TABLE {table} SET (fillfactor = {percent})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in FILLFACTOR:
        op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
