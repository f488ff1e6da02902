"""Bill again the days that may hold a late extension equal to a stored one.

Before this revision, ingest compared a re-derived sandbox's usage rows before and after as
sets.  A late extension at the same minute, template and deployment as a stored one makes a
row equal to it: the sets were equal, the day was not recorded as changed, and a period
already billed never got the adjustment for it (the rows themselves were right).  With an
interval of the sandbox open at that minute the extension lengthened it, and that row's
change marked the day: only extensions outside a running interval were missed.  Which of
the equal rows came late is not recorded, so every ended day holding two equal extension
rows is marked changed: billing bills the difference between its usage and what was billed
for it, nothing where nothing was missed.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

from metering.core.periods import DAY_US
from metering.db.base import now_us
from metering.usage.derive import CHANGED_DAY_UPSERT

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# A day already marked gets a new version, as ingest gives it.  ``WHERE true``: SQLite's
# parser needs it before an upsert's ON CONFLICT after a SELECT.
MARK_DAYS = sa.text(f"""
INSERT INTO usage_changed_days (workspace_id, day, version)
SELECT DISTINCT workspace_id, time - time % {DAY_US}, 1 FROM (
    SELECT workspace_id, time FROM usage_extensions WHERE time < :today
    GROUP BY workspace_id, deployment_id, sandbox_id, template, time, count HAVING count(*) > 1
) AS equal WHERE true
{CHANGED_DAY_UPSERT}
""")


def upgrade() -> None:
    now = now_us()
    op.get_bind().execute(MARK_DAYS, {"today": now - now % DAY_US})


def downgrade() -> None:
    pass  # a day marked changed is billed again for nothing more than it misses
