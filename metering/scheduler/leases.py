"""Database leases: one holder per job at a time, across processes and hosts.

Taking a lease is a single upsert that only overwrites a lease that has expired or is
already ours. On PostgreSQL two concurrent upserts on one name serialize on the row and
the second re-checks the condition against the first's committed row; on SQLite the
write transaction (BEGIN IMMEDIATE) serializes them. Either way exactly one returns a row.
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite

from metering.db import Database
from metering.db.base import now_us as current_time_us
from metering.scheduler.models import JobLease

LEASES = JobLease.__table__


async def try_acquire(db: Database, name: str, holder: str, ttl_us: int, *, now_us: int | None = None) -> bool:
    """Take (or extend, if already ours) the lease ``name`` for ``ttl_us``; False if someone else holds it."""
    now = current_time_us() if now_us is None else now_us
    module = postgresql if db.dialect == "postgresql" else sqlite
    stmt = module.insert(LEASES).values(name=name, holder=holder, expires_at=now + ttl_us)
    stmt = stmt.on_conflict_do_update(
        index_elements=[LEASES.c.name],
        set_={"holder": stmt.excluded.holder, "expires_at": stmt.excluded.expires_at},
        where=(LEASES.c.expires_at <= now) | (LEASES.c.holder == holder),
    ).returning(LEASES.c.name)
    async with db.write() as session:
        # RETURNING yields a row only if the insert or the guarded update happened; more
        # dependable across drivers than rowcount for ON CONFLICT.
        return (await session.execute(stmt)).first() is not None


async def release(db: Database, name: str, holder: str) -> bool:
    """Give the lease back early, only if it is still ours (it may have expired and moved on)."""
    async with db.write() as session:
        result = await session.execute(delete(LEASES).where(LEASES.c.name == name, LEASES.c.holder == holder))
        return result.rowcount == 1
