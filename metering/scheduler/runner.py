"""Running the jobs: under a lease, recorded, on an APScheduler ``AsyncIOScheduler``.

The same :class:`Scheduler` runs inside the service (app lifespan, when
``scheduler.enabled``) and standalone (``metering scheduler``); ``run_once`` runs each job
one time, for cron and tests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
from datetime import datetime, timezone

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from metering.db import Database, create_database
from metering.db.base import now_us as current_time_us
from metering.logging import configure_logging, get_logger
from metering.pricing.service import PriceCatalog
from metering.scheduler.history import finish_run, start_run
from metering.scheduler.jobs import JOBS, JobContext, JobResult, intervals
from metering.scheduler.leases import release, try_acquire
from metering.settings import Settings

log = get_logger(__name__)
STOP_GRACE_SECONDS = 10


def new_holder() -> str:
    """Names this instance in leases and job runs: host, pid and a random part (pids repeat)."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"


class Scheduler:
    def __init__(
        self, db: Database, settings: Settings, prices: PriceCatalog | None = None, *, holder: str | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.prices = prices or PriceCatalog.from_file(settings.pricing_file)
        self.holder = holder or new_holder()
        self._aps: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task] = set()

    async def run_job(self, name: str, *, now_us: int | None = None) -> JobResult | None:
        """Run one job if this instance gets its lease; None if another instance holds it."""
        conf = self.settings.scheduler
        if not await try_acquire(self.db, name, self.holder, conf.lease_seconds * 1_000_000):
            log.debug("job_lease_held_elsewhere", job=name)
            return None
        keeper = asyncio.create_task(self._keep_lease(name))
        try:
            run_id = await start_run(self.db, name, self.holder,
                                     retention_us=conf.job_runs_retention_days * 86_400_000_000)
            ctx = JobContext(self.db, self.settings, self.prices, current_time_us() if now_us is None else now_us)
            try:
                result = await JOBS[name](ctx)
            except Exception as exc:  # recorded, then the next tick tries again
                log.error("job_failed", job=name, error_type=type(exc).__name__, exc_info=exc)
                result = JobResult("failed", detail=f"{type(exc).__name__}: {exc}")
            await finish_run(self.db, run_id, result.outcome, result.key, result.detail)
            # A tick with nothing to do is recorded but not logged above debug: no line every 10 s.
            emit = log.debug if result.outcome == "skipped" else log.info
            emit("job_run", job=name, outcome=result.outcome, key=result.key, detail=result.detail)
            return result
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            try:
                await release(self.db, name, self.holder)
            except Exception as exc:  # it expires by itself
                log.warning("job_lease_release_failed", job=name, error_type=type(exc).__name__)

    async def _keep_lease(self, name: str) -> None:
        """Extend the lease while a long run goes on, so no other instance starts the job meanwhile.

        Losing it (a stall longer than the lease) is not a correctness problem, the jobs are
        idempotent, but it is worth a warning: two instances then work on the job at once.
        """
        ttl_s = self.settings.scheduler.lease_seconds
        while True:
            await asyncio.sleep(max(ttl_s // 3, 1))
            try:
                if not await try_acquire(self.db, name, self.holder, ttl_s * 1_000_000):
                    log.warning("job_lease_lost", job=name)
                    return
            except Exception as exc:  # the run itself will notice a dead database
                log.warning("job_lease_renew_failed", job=name, error_type=type(exc).__name__)

    async def run_once(self, *, now_us: int | None = None, only: list[str] | None = None) -> dict[str, JobResult | None]:
        return {name: await self.run_job(name, now_us=now_us) for name in JOBS if not only or name in only}

    async def _tick(self, name: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await self.run_job(name)
        except Exception as exc:  # the database is down, say: log it, the next tick retries
            log.error("job_tick_failed", job=name, error_type=type(exc).__name__, exc_info=exc)
        finally:
            if task is not None:
                self._running.discard(task)

    def start(self, only: list[str] | None = None) -> None:
        """Schedule every job (or ``only`` those) at its interval, the first run right away.

        Needs a running event loop.
        """
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # not a line per tick
        self._aps = AsyncIOScheduler(timezone=timezone.utc, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": None})
        now = datetime.now(timezone.utc)
        for name, seconds in intervals(self.settings).items():
            if only and name not in only:
                continue
            self._aps.add_job(self._tick, "interval", seconds=seconds, args=[name], id=name, name=name,
                              next_run_time=now)
        self._aps.start()
        log.info("scheduler_started", holder=self.holder, jobs=intervals(self.settings))

    async def stop(self, grace_seconds: int = STOP_GRACE_SECONDS) -> None:
        """Stop scheduling, let running jobs finish (up to ``grace_seconds``), then cancel them."""
        if self._aps is None:
            return
        self._aps.pause()
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace_seconds)
        self._aps.shutdown(wait=False)  # cancels whatever is still running
        self._aps = None
        log.info("scheduler_stopped", holder=self.holder)


async def run_standalone(settings: Settings, *, once: bool = False, only: list[str] | None = None) -> int:
    """``metering scheduler``: until SIGTERM or SIGINT, or one pass with ``once``."""
    configure_logging(settings.log_level, settings.log_format)
    db = create_database(settings.database_url)
    scheduler = Scheduler(db, settings)
    try:
        if once:
            results = await scheduler.run_once(only=only)
            for name, result in results.items():
                print(f"{name}: {result.outcome if result else 'lease held elsewhere'}"
                      f"{' ' + result.detail if result and result.detail else ''}", flush=True)
            return 1 if any(r is not None and r.outcome == "failed" for r in results.values()) else 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        scheduler.start(only)
        await stop.wait()
        await scheduler.stop()
        return 0
    finally:
        await db.dispose()
