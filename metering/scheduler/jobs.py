"""The scheduled jobs. Each is idempotent: running it twice, or after a crash, adds nothing twice.

A job gets a :class:`JobContext` and returns a :class:`JobResult`; the runner takes the
lease and records the run around it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import select

from metering.audit.verify import write_anchors
from metering.core.periods import DAY_US, floor_to, period_bounds
from metering.core.timeutil import format_time, parse_time
from metering.db import Database
from metering.invoices.payments import on_settlement_change
from metering.invoices.service import run_billing
from metering.logging import get_logger
from metering.pricing.service import PriceCatalog
from metering.reports.service import earliest_activity, write_reports
from metering.scheduler.models import JobRun
from metering.settings import Settings
from metering.settlements.service import recheck_pending
from metering.spend.budgets import check_budgets
from metering.spend.overruns import notify_overruns
from metering.webhooks.delivery import deliver_due, prune

RUNS = JobRun.__table__
log = get_logger(__name__)


@dataclass(frozen=True)
class JobContext:
    db: Database
    settings: Settings
    prices: PriceCatalog
    now_us: int


@dataclass(frozen=True)
class JobResult:
    outcome: str  # ok | skipped | failed
    key: str | None = None
    detail: str | None = None


Job = Callable[[JobContext], Awaitable[JobResult]]


def billing_periods(settings: Settings, now: int) -> list[tuple[int, int]]:
    """The current period (to refresh its drafts) and the ``billing_lookback_periods`` before it.

    Each billing run is idempotent, so re-running an ended period is a no-op once it is
    final. A bounded lookback keeps a tick cheap; it covers an outage of that many periods.
    """
    periods = [period_bounds(now, settings.billing.period)]
    for _ in range(settings.scheduler.billing_lookback_periods):
        periods.append(period_bounds(periods[-1][0] - 1, settings.billing.period))
    return sorted(periods)


async def billing(ctx: JobContext) -> JobResult:
    periods = billing_periods(ctx.settings, ctx.now_us)
    done, failed = [], False
    for start, end in periods:
        # One period failing must not keep the others (the current drafts, say) from running.
        try:
            result = await run_billing(ctx.db, ctx.settings, start, end, now_us=ctx.now_us, prices=ctx.prices)
        except Exception as exc:
            log.error("billing_period_failed", period_start=format_time(start), exc_info=exc)
            done.append(f"{format_time(start)}: {type(exc).__name__}: {exc}")
            failed = True
            continue
        done.append(f"{format_time(start)}: invoices={result.invoices} finalized={result.finalized}")
    key = f"{format_time(periods[0][0])}..{format_time(periods[-1][1])}"
    return JobResult("failed" if failed else "ok", key=key, detail="; ".join(done))


async def _report_watermark(db: Database) -> int | None:
    """The end of the last day range a reports run finished (its key ``first..last``)."""
    async with db.read() as session:
        key = (await session.execute(
            select(RUNS.c.key).where(RUNS.c.job == "reports", RUNS.c.outcome == "ok", RUNS.c.key.is_not(None))
            .order_by(RUNS.c.started_at.desc()).limit(1)
        )).scalar()
    if not key:
        return None
    return parse_time(key.split("..")[-1] + "T00:00:00Z") + DAY_US


async def reports(ctx: JobContext) -> JobResult:
    """Reports for every UTC day that ended ``report_grace_seconds`` ago and still lacks them.

    From the watermark (minus a few days, for events that arrive late for a day nobody had
    a report for yet), or from the first activity on the very first run, up to a bounded
    number of days per tick, so a backlog is caught up over several ticks.
    """
    conf = ctx.settings.scheduler
    upper = floor_to(ctx.now_us - conf.report_grace_seconds * 1_000_000, "day")
    watermark = await _report_watermark(ctx.db)
    if watermark is None:
        async with ctx.db.read() as session:
            first = await earliest_activity(session)
        if first is None:
            return JobResult("skipped", detail="no usage or runs yet")
        base = lower = floor_to(first, "day")
    else:
        base, lower = watermark, watermark - conf.report_lookback_days * DAY_US
    # Counted from the watermark, not from ``lower``: the lookback never eats the progress.
    stop = min(upper, base + conf.report_max_days_per_tick * DAY_US)
    if stop <= lower:
        return JobResult("skipped", detail="no day has ended since the last run")
    book = await ctx.prices.refresh(ctx.db)
    done = await write_reports(ctx.db, ctx.settings, book, lower, stop)
    await write_anchors(ctx.db, ctx.settings.reports_dir, lower, stop)  # each day's last audit hash
    return JobResult("ok", key=done.key, detail=f"due={done.due} created={done.created}")


async def settlements(ctx: JobContext) -> JobResult:
    # The same hook the API passes: a settlement confirmed (or reorged) here moves its invoice too.
    checked = await recheck_pending(ctx.db, ctx.settings, ctx.now_us, on_change=on_settlement_change)
    return JobResult("ok", detail=f"rechecked={checked}")


async def spend(ctx: JobContext) -> JobResult:
    """Budget thresholds reached and sandboxes overrunning: each notified once (spend.notify)."""
    book = await ctx.prices.refresh(ctx.db)
    crossed = await check_budgets(ctx.db, ctx.settings, book, ctx.now_us)
    overruns = await notify_overruns(ctx.db, ctx.settings, book, ctx.now_us)
    if not crossed and not overruns:
        return JobResult("skipped", detail="nothing crossed")
    return JobResult("ok", detail=f"thresholds={crossed} overruns={overruns}")


async def webhooks(ctx: JobContext) -> JobResult:
    stats = await deliver_due(ctx.db, ctx.settings, now_us=ctx.now_us)
    pruned = await prune(ctx.db, ctx.settings, now_us=ctx.now_us)
    if not stats.attempted and not pruned:
        return JobResult("skipped", detail="nothing due")
    return JobResult("ok", detail=f"attempted={stats.attempted} delivered={stats.delivered} "
                                  f"retrying={stats.retrying} failed={stats.failed} pruned={pruned}")


# In the order ``--once`` runs them: webhooks last, so what the others enqueue goes out.
JOBS: dict[str, Job] = {"billing": billing, "reports": reports, "settlements": settlements, "spend": spend,
                        "webhooks": webhooks}


def intervals(settings: Settings) -> dict[str, int]:
    conf = settings.scheduler
    return {
        "billing": conf.billing_interval_seconds,
        "reports": conf.report_interval_seconds,
        "settlements": conf.settlement_recheck_seconds,
        "spend": settings.spend.check_interval_seconds,
        "webhooks": conf.webhook_interval_seconds,
    }
