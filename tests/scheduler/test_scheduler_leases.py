"""Database leases: one holder at a time, across connections racing for it."""

import asyncio

from sqlalchemy import select

from metering.db import create_database
from metering.scheduler.leases import release, try_acquire
from metering.scheduler.models import JobLease

TTL = 60_000_000


async def test_concurrent_acquirers_exactly_one_wins(db, settings):
    # Separate engines: separate connections, really racing in the database.
    dbs = [create_database(settings.database_url) for _ in range(4)]
    try:
        for round_ in range(10):
            name = f"race_{round_}"
            won = await asyncio.gather(*(try_acquire(d, name, f"holder_{i}", TTL) for i, d in enumerate(dbs)))
            assert sum(won) == 1, won
            async with db.read() as session:
                lease = (await session.execute(select(JobLease).where(JobLease.name == name))).scalar_one()
            assert lease.holder == f"holder_{won.index(True)}"
    finally:
        for d in dbs:
            await d.dispose()


async def test_held_lease_is_refused_then_free_after_release_or_expiry(db):
    assert await try_acquire(db, "job", "a", TTL, now_us=1_000)
    assert not await try_acquire(db, "job", "b", TTL, now_us=2_000)
    # The holder may extend its own lease.
    assert await try_acquire(db, "job", "a", TTL, now_us=3_000)
    # Only the holder releases it.
    assert not await release(db, "job", "b")
    assert not await try_acquire(db, "job", "b", TTL, now_us=4_000)
    assert await release(db, "job", "a")
    assert await try_acquire(db, "job", "b", TTL, now_us=5_000)
    # b's holder dies: once the lease expires, another takes it over.
    assert not await try_acquire(db, "job", "c", TTL, now_us=5_000 + TTL - 1)
    assert await try_acquire(db, "job", "c", TTL, now_us=5_000 + TTL)
    assert not await release(db, "job", "b")


async def test_a_long_run_keeps_its_lease(db, settings, monkeypatch):
    import msgspec

    from metering.scheduler.jobs import JOBS, JobResult
    from metering.scheduler.runner import Scheduler

    short = msgspec.structs.replace(settings, scheduler=msgspec.structs.replace(settings.scheduler, lease_seconds=2))
    refused = []

    async def slow(ctx):
        # Well past the 2 s lease: without renewal another instance would get it.
        for _ in range(4):
            await asyncio.sleep(1)
            refused.append(not await try_acquire(db, "reports", "other-instance", TTL))
        return JobResult("ok")

    monkeypatch.setitem(JOBS, "reports", slow)
    result = await Scheduler(db, short, holder="me").run_job("reports")
    assert result.outcome == "ok"
    assert refused == [True, True, True, True]
    # Released at the end: the next instance gets it at once.
    assert await try_acquire(db, "reports", "other-instance", TTL)
