"""Jobs under the runner: leased, recorded, idempotent, and resumable after a crash."""

from pathlib import Path

import pytest
from sqlalchemy import func, select

from metering.core.timeutil import parse_time
from metering.reports import service as report_service
from metering.reports.files import day_name
from metering.reports.models import Report
from metering.scheduler.history import start_run
from metering.scheduler.jobs import billing_periods
from metering.scheduler.leases import try_acquire
from metering.scheduler.models import JobRun
from metering.scheduler.runner import Scheduler
from metering.settings import load_settings
from metering.webhooks.models import OutboxEvent
from tests.reports.data import EXPECTED_REPORTS, post_day


async def reports_made(db):
    async with db.read() as session:
        rows = (await session.execute(select(Report.workspace_id, Report.start))).all()
    return sorted((ws, day_name(start)) for ws, start in rows)


async def runs_of(db, job):
    async with db.read() as session:
        return (await session.execute(
            select(JobRun.outcome, JobRun.key, JobRun.detail, JobRun.finished_at)
            .where(JobRun.job == job).order_by(JobRun.id))).all()


async def count(db, model):
    async with db.read() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def test_reports_job_twice_records_two_runs_and_one_report_each(client, make_token, db, settings):
    await post_day(client, make_token)
    scheduler = Scheduler(db, settings)
    first = await scheduler.run_job("reports")
    second = await scheduler.run_job("reports")
    assert first.outcome == second.outcome == "ok"
    assert first.detail == "due=3 created=3"
    assert second.detail == "due=0 created=0"
    assert await reports_made(db) == sorted(EXPECTED_REPORTS)
    runs = await runs_of(db, "reports")
    assert [r.outcome for r in runs] == ["ok", "ok"]
    assert all(r.finished_at is not None for r in runs)
    assert runs[0].key.startswith("2026-01-05..")
    # One report.created per report, not per run.
    assert await count(db, OutboxEvent) == 3


async def test_crash_halfway_is_resumed_without_duplicates(client, make_token, db, settings, monkeypatch):
    await post_day(client, make_token)
    real = report_service.write_daily_report
    calls = []

    async def crash_after_first(*args, **kwargs):
        if calls:
            raise RuntimeError("killed halfway")
        calls.append(args)
        return await real(*args, **kwargs)

    monkeypatch.setattr(report_service, "write_daily_report", crash_after_first)
    scheduler = Scheduler(db, settings)
    crashed = await scheduler.run_job("reports")
    assert crashed.outcome == "failed" and "killed halfway" in crashed.detail
    assert len(await reports_made(db)) == 1

    monkeypatch.setattr(report_service, "write_daily_report", real)
    resumed = await scheduler.run_job("reports")
    assert resumed.outcome == "ok" and resumed.detail == "due=2 created=2"
    assert await reports_made(db) == sorted(EXPECTED_REPORTS)
    assert await count(db, OutboxEvent) == 3
    assert [r.outcome for r in await runs_of(db, "reports")] == ["failed", "ok"]


async def test_crash_between_files_and_row_is_resumed(client, make_token, db, settings, monkeypatch):
    # The files are written, then the transaction inserting the row fails: the row and its
    # webhook roll back together, and the next run rewrites the files and inserts both once.
    await post_day(client, make_token)

    async def broken_enqueue(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(report_service, "enqueue", broken_enqueue)
    scheduler = Scheduler(db, settings)
    assert (await scheduler.run_job("reports")).outcome == "failed"
    assert await reports_made(db) == []
    assert await count(db, OutboxEvent) == 0
    reports_dir = Path(settings.reports_dir)
    assert list(reports_dir.rglob("*.json"))  # the files were written before the failure

    monkeypatch.undo()
    assert (await scheduler.run_job("reports")).outcome == "ok"
    assert await reports_made(db) == sorted(EXPECTED_REPORTS)
    assert await count(db, OutboxEvent) == 3
    # No stray temporary files are left next to the reports.
    assert not [p for p in reports_dir.rglob("*") if p.name.endswith(".tmp")]


async def test_a_run_that_died_is_marked_abandoned(db, settings):
    scheduler = Scheduler(db, settings, holder="dead")
    await start_run(db, "reports", "dead")  # started, never finished: the process was killed
    assert (await scheduler.run_job("reports")).outcome == "skipped"  # nothing to report yet
    runs = await runs_of(db, "reports")
    assert [r.outcome for r in runs] == ["failed", "skipped"]
    assert runs[0].detail.startswith("abandoned")


async def test_lease_held_elsewhere_means_the_job_does_not_run(client, make_token, db, settings):
    await post_day(client, make_token)
    assert await try_acquire(db, "reports", "another-instance", 60_000_000)
    assert await Scheduler(db, settings).run_job("reports") is None
    assert await reports_made(db) == []
    assert await runs_of(db, "reports") == []


async def test_nothing_is_due_before_the_day_ends_plus_grace(client, make_token, db, settings):
    await post_day(client, make_token)
    scheduler = Scheduler(db, settings)
    # 00:30 on the 6th: the 5th ended, but not report_grace_seconds (1 h) ago.
    early = await scheduler.run_job("reports", now_us=parse_time("2026-01-06T00:30:00Z"))
    assert early.outcome == "skipped"
    on_time = await scheduler.run_job("reports", now_us=parse_time("2026-01-06T01:00:00Z"))
    assert on_time.outcome == "ok"
    assert await reports_made(db) == [("ws_1", "2026-01-05"), ("ws_2", "2026-01-05")]


async def test_every_job_runs_once_and_is_recorded(db, settings):
    results = await Scheduler(db, settings).run_once()
    assert set(results) == {"billing", "reports", "settlements", "spend", "webhooks"}
    assert all(r is not None and r.outcome in ("ok", "skipped") for r in results.values()), results
    for job in results:
        assert len(await runs_of(db, job)) == 1


@pytest.mark.parametrize(("period", "now", "expected"), [
    ("month", "2026-03-10T00:00:00Z", [("2026-02-01", "2026-03-01"), ("2026-03-01", "2026-04-01")]),
    ("day", "2026-03-10T05:00:00Z", [("2026-03-09", "2026-03-10"), ("2026-03-10", "2026-03-11")]),
])
def test_billing_ticks_cover_the_previous_and_current_period(settings, period, now, expected):
    conf = load_settings(environ={}, database_url=settings.database_url, billing={"period": period})
    got = [(day_name(s), day_name(e)) for s, e in billing_periods(conf, parse_time(now))]
    assert got == expected


async def test_billing_job_bills_the_ended_period_once(client, make_token, db, settings):
    from metering.invoices.models import Invoice

    await post_day(client, make_token)
    scheduler = Scheduler(db, settings)
    # 2 h after January ended: past the 1 h grace, so January's invoices are final.
    now = parse_time("2026-02-01T02:00:00Z")
    first = await scheduler.run_job("billing", now_us=now)
    assert first.outcome == "ok", first.detail
    assert first.key == "2026-01-01T00:00:00Z..2026-03-01T00:00:00Z"
    second = await scheduler.run_job("billing", now_us=now)
    assert second.outcome == "ok", second.detail
    async with db.read() as session:
        invoices = (await session.execute(select(Invoice.workspace_id, Invoice.period_start, Invoice.status)
                                          .where(Invoice.workspace_id == "ws_1"))).all()
        finalized_events = (await session.execute(select(func.count()).select_from(OutboxEvent)
                                                  .where(OutboxEvent.type == "invoice.finalized"))).scalar_one()
    assert invoices == [("ws_1", parse_time("2026-01-01T00:00:00Z"), "finalized")]
    assert finalized_events == 1
