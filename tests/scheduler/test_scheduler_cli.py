"""``metering scheduler`` as a real process, and the scheduler inside the service."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from metering.api.app import create_app
from metering.reports.models import Report
from metering.scheduler.models import JobRun
from tests.process import ROOT
from tests.reports.data import EXPECTED_REPORTS, post_day
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.slow


def scheduler_env(settings, **extra) -> dict[str, str]:
    return {**os.environ, "METERING_DATABASE_URL": settings.database_url,
            "METERING_REPORTS_DIR": settings.reports_dir, "METERING_LOG_LEVEL": "WARNING", **extra}


def run_once(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metering.cli", "scheduler", "--once", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


async def job_runs(db):
    async with db.read() as session:
        return (await session.execute(select(JobRun.job, JobRun.outcome).order_by(JobRun.id))).all()


async def report_count(db):
    async with db.read() as session:
        return (await session.execute(select(func.count()).select_from(Report))).scalar_one()


async def test_once_runs_every_job_and_exits(client, make_token, db, settings):
    await post_day(client, make_token)
    with Receiver() as receiver:
        env = scheduler_env(settings, METERING_WEBHOOKS=json.dumps([{"url": receiver.url, "secret_env": "HOOK_KEY"}]),
                            HOOK_KEY="s3cret-value")
        done = await asyncio.to_thread(run_once, env)
        assert done.returncode == 0, done.stderr
        lines = dict(line.split(": ", 1) for line in done.stdout.strip().splitlines())
        assert set(lines) == {"billing", "reports", "settlements", "spend", "webhooks"}
        assert lines["reports"].startswith("ok due=3 created=3")
        # Webhooks run last: this pass's report.created events already went out.
        assert lines["webhooks"].startswith("ok") and "delivered=3" in lines["webhooks"]
        assert len(receiver.received) == 3
    assert "s3cret-value" not in done.stdout + done.stderr
    files = sorted(p.relative_to(settings.reports_dir).as_posix() for p in Path(settings.reports_dir).rglob("*.json"))
    assert files == sorted(f"{ws}/{day}.json" for ws, day in EXPECTED_REPORTS)
    assert sorted(job for job, _ in await job_runs(db)) == ["billing", "reports", "settlements", "spend", "webhooks"]

    again = await asyncio.to_thread(run_once, env, "--job", "reports")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "reports: ok due=0 created=0"
    assert await report_count(db) == 3


async def test_two_processes_at_once_write_each_report_once(client, make_token, db, settings):
    await post_day(client, make_token)
    env = scheduler_env(settings)
    both = await asyncio.gather(*(asyncio.to_thread(run_once, env, "--job", "reports") for _ in range(2)))
    assert all(p.returncode == 0 for p in both), [p.stderr for p in both]
    assert await report_count(db) == 3
    outcomes = [line for p in both for line in p.stdout.splitlines()]
    # Either one took the lease while the other was refused, or they ran one after the other.
    assert outcomes.count("reports: ok due=3 created=3") == 1, outcomes


async def test_runs_until_sigterm(db, settings, tmp_path):
    env = scheduler_env(settings, METERING_SCHEDULER__WEBHOOK_INTERVAL_SECONDS="1")
    log = (tmp_path / "scheduler.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "metering.cli", "scheduler"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(await job_runs(db)) < 6:  # five jobs, then a second webhooks tick
            assert proc.poll() is None, (tmp_path / "scheduler.log").read_text()
            await asyncio.sleep(0.2)
        runs = await job_runs(db)
        assert {job for job, _ in runs} == {"billing", "reports", "settlements", "spend", "webhooks"}
        # The webhook job ticks every second: it ran more than once.
        assert sum(1 for job, _ in runs if job == "webhooks") >= 2
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert all(outcome is not None for _, outcome in await job_runs(db))


async def test_service_runs_the_scheduler_when_enabled(client, make_token, db, settings):
    await post_day(client, make_token)
    enabled = msgspec.structs.replace(settings, scheduler=msgspec.structs.replace(settings.scheduler, enabled=True))
    async with AsyncTestClient(app=create_app(enabled)):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and await report_count(db) < 3:
            await asyncio.sleep(0.1)
    assert await report_count(db) == 3
    assert {job for job, _ in await job_runs(db)} >= {"reports"}
