"""``metering invoices verify``: finalized invoices re-derived from the stored events and prices."""

from __future__ import annotations

import os
import subprocess
import sys

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from metering.api.app import create_app
from metering.core.lifecycle import LifetimePolicy

from metering.core.periods import period_bounds
from metering.core.timeutil import format_time
from metering.db.base import now_us
from metering.errors import NotFound
from metering.invoices.service import run_billing
from metering.invoices.verify import Report, verify_invoices
from metering.settings import LifetimeSettings

from tests.factories import BATCH, event
from tests.process import ROOT

JAN = {"period_start": "2026-01-01T00:00:00Z", "period_end": "2026-02-01T00:00:00Z"}
FEB = {"period_start": "2026-02-01T00:00:00Z", "period_end": "2026-03-01T00:00:00Z"}


def verify(settings, *args: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "METERING_DATABASE_URL": settings.database_url, **env_vars}
    return subprocess.run([sys.executable, "-m", "metering.cli", "invoices", "verify", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


async def tamper_line(db, invoice_id: str, kind: str, amount: int) -> None:
    """Change a finalized invoice's line behind the triggers that forbid it."""
    async with db.write() as session:
        if db.is_sqlite:
            sql = (await session.execute(text(
                "SELECT sql FROM sqlite_master WHERE name = 'invoice_lines_frozen_update'"))).scalar()
            await session.execute(text("DROP TRIGGER invoice_lines_frozen_update"))
        else:
            await session.execute(text("ALTER TABLE invoice_lines DISABLE TRIGGER invoice_lines_frozen"))
        await session.execute(text("UPDATE invoice_lines SET amount = :a WHERE invoice_id = :i AND kind = :k"),
                              {"a": amount, "i": invoice_id, "k": kind})
        if db.is_sqlite:
            await session.execute(text(sql))
        else:
            await session.execute(text("ALTER TABLE invoice_lines ENABLE TRIGGER invoice_lines_frozen"))


async def test_finalized_invoices_rederive_and_a_tampered_line_is_named(client, admin, db, settings):
    evs = [event("sandbox.running", "2026-01-10T10:00:00Z", template="giga-max"),
           event("sandbox.extended", "2026-01-10T10:10:00Z", template="giga-max", minutes=15),
           event("sandbox.stopped", "2026-01-10T11:00:00Z"),
           event("sandbox.running", "2026-01-31T23:00:00Z", workspace_id="ws_2", sandbox_id="sb_2",
                 template="giga-pro")]  # still running: cut at the period end, then February's
    assert (await client.post("/v1/events", json=evs, headers={**admin, **BATCH})).status_code == 202
    assert (await client.post("/v1/billing-runs", json=JAN, headers=admin)).status_code == 201
    late = [event("sandbox.running", "2026-01-20T10:00:00Z", template="giga-mini", sandbox_id="sb_late"),
            event("sandbox.stopped", "2026-01-20T12:00:00Z", sandbox_id="sb_late"),
            event("sandbox.stopped", "2026-02-01T01:00:00Z", workspace_id="ws_2", sandbox_id="sb_2")]
    assert (await client.post("/v1/events", json=late, headers={**admin, **BATCH})).status_code == 202
    assert (await client.post("/v1/billing-runs", json=FEB, headers=admin)).status_code == 201
    # January's late usage goes on the current period's draft, final once that period has ended.
    start, end = period_bounds(now_us(), settings.billing.period)
    prices = client.app.state.prices
    await run_billing(db, settings, start, end, prices=prices)
    await run_billing(db, settings, start, end, now_us=end + settings.billing.grace_seconds * 1_000_000 + 1,
                      prices=prices)
    invoices = (await client.get("/v1/invoices", headers=admin)).json()["items"]
    assert len(invoices) == 4 and all(i["status"] == "finalized" for i in invoices)
    adjusted = next(i for i in invoices if any(ln["kind"] == "adjustment" for ln in i["lines"]))
    assert adjusted["period_start"] == format_time(start) and adjusted["workspace_id"] == "ws_1"

    ok = verify(settings)
    assert ok.returncode == 0 and "4 finalized invoices re-derived: every one matches" in ok.stdout, ok.stderr

    jan_ws1 = next(i for i in invoices if i["workspace_id"] == "ws_1" and i["period_start"] == JAN["period_start"])
    await tamper_line(db, jan_ws1["id"], "running", 700_000)  # was 0.800000
    await tamper_line(db, adjusted["id"], "adjustment", 1)  # was 0.200000
    bad = verify(settings)
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert lines == [
        f"{jan_ws1['number']} ({jan_ws1['id']}): running dep_1 giga-max: stored 0.700000 (3600.000000 s), "
        f"derived 0.800000 (3600.000000 s)",
        f"{jan_ws1['number']} ({jan_ws1['id']}): totals: stored subtotal 1.000000 credits 0.000000 carried forward "
        f"0.000000 total 1.000000, derived subtotal 0.900000 credits 0.000000 (0 to the subtotal) carried forward "
        f"0.000000 total 0.900000",
        f"{adjusted['number']} ({adjusted['id']}): adjustment dep_1 giga-mini (running, for the period from "
        f"2026-01-01T00:00:00Z): stored 0.000001 (7200.000000 s), derived 0.200000 (7200.000000 s)",
        f"{adjusted['number']} ({adjusted['id']}): totals: stored subtotal 0.200000 credits 0.000000 carried forward "
        f"0.000000 total 0.200000, derived subtotal 0.000001 credits 0.000000 (0 to the subtotal) carried forward "
        f"0.000000 total 0.000001",
    ], bad.stdout
    assert "4 finalized invoices re-derived: 2 differ" in bad.stderr
    # One invoice only; an untouched one passes.
    other = next(i for i in invoices if i["workspace_id"] == "ws_2" and i["period_start"] == JAN["period_start"])
    lifetime = settings.lifetime.policy
    assert (await verify_invoices(db, prices, other["id"], lifetime=lifetime)) == Report(1, [])
    assert [d.line for d in (await verify_invoices(db, prices, jan_ws1["id"], lifetime=lifetime)).differences] == [
        "running dep_1 giga-max", "totals"]
    with pytest.raises(NotFound):
        await verify_invoices(db, prices, "inv_nope", lifetime=lifetime)


async def test_verify_cuts_an_overrun_as_billing_did_with_bill_beyond_false(db, settings):
    """Billed with ``bill_beyond = false``, an overrunning sandbox's invoice and the adjustment
    a late extension makes re-derive without difference under the same settings; under
    ``bill_beyond = true`` they would differ, and a tampered line is still named."""
    cut = msgspec.structs.replace(settings, lifetime=LifetimeSettings(tolerance_seconds=300, bill_beyond=False))
    async with AsyncTestClient(app=create_app(cut)) as client:
        admin = {"Authorization": f"Bearer {cut.admin_token}"}
        # A ghost: running 10:00, stopped 12:00, lived until 10:15, billed to 10:20 (20 min at
        # 0.10/h); and a sandbox stopped in time (giga-max 0.80/h, 10 min).
        evs = [event("sandbox.running", "2026-01-10T10:00:00Z", sandbox_id="sb_g"),
               event("sandbox.stopped", "2026-01-10T12:00:00Z", sandbox_id="sb_g"),
               event("sandbox.running", "2026-01-10T10:00:00Z", sandbox_id="sb_ok", template="giga-max"),
               event("sandbox.stopped", "2026-01-10T10:10:00Z", sandbox_id="sb_ok")]
        assert (await client.post("/v1/events", json=evs, headers={**admin, **BATCH})).status_code == 202
        assert (await client.post("/v1/billing-runs", json=JAN, headers=admin)).status_code == 201
        (jan,) = (await client.get("/v1/invoices", headers=admin)).json()["items"]
        assert (jan["status"], jan["total"]) == ("finalized", "0.166666")  # 0.033333 + 0.133333
        # A late extension (10:25, 30 min) moves the lifetime to 10:45: 30 more minutes billed,
        # and the extension itself, as adjustments on the current period's invoice.
        late = event("sandbox.extended", "2026-01-10T10:25:00Z", sandbox_id="sb_g", minutes=30)
        assert (await client.post("/v1/events", json=[late], headers={**admin, **BATCH})).status_code == 202
        start, end = period_bounds(now_us(), cut.billing.period)
        prices = client.app.state.prices
        await run_billing(db, cut, start, end, prices=prices)
        await run_billing(db, cut, start, end, now_us=end + cut.billing.grace_seconds * 1_000_000 + 1, prices=prices)
        invoices = (await client.get("/v1/invoices", headers=admin)).json()["items"]
    adjusted = next(i for i in invoices if i["id"] != jan["id"])
    assert (adjusted["status"], adjusted["total"]) == ("finalized", "0.100000")  # 0.05 running + 0.05 extensions

    ok = verify(cut, METERING_LIFETIME__BILL_BEYOND="false")
    assert ok.returncode == 0 and "2 finalized invoices re-derived: every one matches" in ok.stdout, ok.stderr
    # Under the default policy the same invoices are not what billing would have made.
    full = await verify_invoices(db, prices, lifetime=LifetimePolicy())
    assert [str(d).split(": ", 1)[1] for d in full.differences] == [
        "running dep_1 giga-mini: stored 0.033333 (1200.000000 s), derived 0.200000 (7200.000000 s)",
        "adjustment dep_1 giga-mini (running, for the period from 2026-01-01T00:00:00Z): "
        "stored 0.050000 (1800.000000 s), derived no line"]

    await tamper_line(db, adjusted["id"], "adjustment", 1)
    bad = verify(cut, METERING_LIFETIME__BILL_BEYOND="false")
    assert bad.returncode == 1 and "2 finalized invoices re-derived: 1 differ" in bad.stderr
    assert [line.split(": ", 1)[1] for line in bad.stdout.splitlines()][0] == (
        "adjustment dep_1 giga-mini (extension, for the period from 2026-01-01T00:00:00Z): "
        "stored 0.000001 (x 2), derived 0.050000 (x 2)"), bad.stdout
