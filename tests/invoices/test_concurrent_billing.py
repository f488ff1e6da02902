"""Two real service processes run the same billing run at the same moment."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import text

from metering.invoices.service import CHUNK
from tests.conftest import ADMIN_TOKEN
from tests.factories import event
from tests.process import ROOT, ServerProcess

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JAN = {"period_start": "2026-01-01T00:00:00Z", "period_end": "2026-02-01T00:00:00Z"}


def workspace_events(n: int) -> list[dict]:
    out = []
    for ws in range(n):
        kw = {"workspace_id": f"ws_{ws:03d}", "sandbox_id": f"sb_{ws}"}
        out += [event("sandbox.running", "2026-01-10T10:00:00Z", **kw),
                event("sandbox.stopped", "2026-01-10T11:00:00Z", **kw)]
    return out


@pytest.fixture
def servers(db_url, db, tmp_path):
    env = {"METERING_DATABASE_URL": db_url, "METERING_ADMIN_TOKEN": ADMIN_TOKEN, "METERING_SCHEDULER__ENABLED": "false"}
    procs = [ServerProcess(env, tmp_path / f"server{i}.log").start() for i in range(2)]
    yield procs
    for p in procs:
        p.stop()


async def test_two_processes_make_one_invoice_per_workspace(servers, db):
    a, b = servers
    # More workspaces than one billing chunk (invoices.service.CHUNK), so the runs interleave chunks.
    count = 2 * CHUNK + 50
    resp = httpx.post(f"{a.url}/v1/events", json=workspace_events(count), timeout=30,
                      headers={**ADMIN, "Content-Type": "application/cloudevents-batch+json"})
    assert resp.status_code == 202
    with ThreadPoolExecutor(6) as pool:
        runs = list(pool.map(lambda url: httpx.post(f"{url}/v1/billing-runs", json=JAN, headers=ADMIN, timeout=60),
                             [a.url, b.url] * 3))
    assert [r.status_code for r in runs] == [201] * 6, [r.text for r in runs]
    assert {(r.json()["invoices"], r.json()["finalized"]) for r in runs} == {(count, count)}
    async with db.read() as session:
        rows = (await session.execute(text("SELECT workspace_id, number FROM invoices"))).all()
    assert sorted(ws for ws, _ in rows) == [f"ws_{n:03d}" for n in range(count)]
    assert sorted(number for _, number in rows) == [f"INV-{n:06d}" for n in range(1, count + 1)]


def test_cli_billing_run(db_url, db, tmp_path):
    env = {"METERING_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "metering.cli", "billing", "run", "--period-start",
                          "2026-01-01T00:00:00Z", "--period-end", "2026-02-01T00:00:00Z"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "0 invoices, 0 finalized" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "metering.cli", "billing", "run", "--period-start",
                          "2026-01-02T00:00:00Z", "--period-end", "2026-02-01T00:00:00Z"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "whole UTC month" in bad.stderr
