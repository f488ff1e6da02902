"""The record of job runs: a row when a run starts, completed when it ends.

A row left without ``finished_at`` belongs to a run that died (crash, kill); the next
holder of the job's lease marks it ``failed`` so the history never shows it as running.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, update

from metering.db import Database
from metering.db.base import now_us as current_time_us
from metering.scheduler.models import JobRun

RUNS = JobRun.__table__
DETAIL_MAX = 2000


async def start_run(db: Database, job: str, holder: str, *, retention_us: int | None = None) -> int:
    """Record a run as started; call it while holding the job's lease."""
    now = current_time_us()
    async with db.write() as session:
        await session.execute(
            update(RUNS)
            .where(RUNS.c.job == job, RUNS.c.finished_at.is_(None))
            .values(finished_at=now, outcome="failed", detail="abandoned: the run stopped before it finished")
        )
        if retention_us is not None:
            # The index (job, started_at) keeps this cheap; it bounds the table's growth.
            await session.execute(delete(RUNS).where(RUNS.c.job == job, RUNS.c.started_at < now - retention_us))
        result = await session.execute(
            insert(RUNS).values(job=job, holder=holder, started_at=now).returning(RUNS.c.id)
        )
        return result.scalar_one()


async def finish_run(db: Database, run_id: int, outcome: str, key: str | None, detail: str | None) -> None:
    async with db.write() as session:
        await session.execute(
            update(RUNS).where(RUNS.c.id == run_id).values(
                finished_at=current_time_us(), outcome=outcome, key=key[:256] if key else None,
                detail=detail[:DETAIL_MAX] if detail else None,
            )
        )
