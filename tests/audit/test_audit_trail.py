"""The audit trail: every change of money or access appended, chained, paged, verified."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import text

from metering.audit import models as audit
from metering.audit.service import GENESIS, entry_hash
from metering.audit.verify import verify_chain, write_anchors
from metering.core.periods import period_bounds
from metering.core.timeutil import parse_time
from metering.db import create_database
from metering.db.base import now_us
from metering.invoices import payments, service as invoice_service
from metering.invoices.payments import sync_paid, on_settlement_change
from metering.settlements import chain
from metering.settlements.models import Reason, Settlement, Status
from metering.settlements.service import _insert, _save_check
from metering.tokens.service import create_token
from tests.factories import BATCH, event
from tests.process import ROOT

JAN = {"period_start": "2026-01-01T00:00:00Z", "period_end": "2026-02-01T00:00:00Z"}
FEB = {"period_start": "2026-02-01T00:00:00Z", "period_end": "2026-03-01T00:00:00Z"}


async def entries(client, admin, after=0, limit=500):
    resp = await client.get("/v1/audit", params={"after": after, "limit": limit}, headers=admin)
    assert resp.status_code == 200, resp.text
    return resp.json()


def settlement(kind="invoice", invoice_id=None, status=Status.PENDING, workspace_id="ws_1") -> Settlement:
    now = now_us()
    return Settlement(
        id=f"stl_{secrets.token_hex(8)}", network="eip155:8453", chain_id=8453,
        transaction="0x" + secrets.token_hex(32), log_index=1, block_number=7, block_hash="0x" + "a" * 64,
        payer="0x" + "1" * 40, pay_to="0x" + "2" * 40, amount=800_000, nonce="0x" + secrets.token_hex(32),
        valid_before=2**40, x402_version=2, purpose_kind=kind, purpose=json.dumps({"kind": kind}),
        workspace_id=workspace_id, invoice_id=invoice_id, status=status, created_at=now,
        confirmed_at=now if status == Status.CONFIRMED else None, updated_at=now)


async def test_every_change_of_money_or_access_is_chained_and_paged(client, admin, db, settings):
    made = await client.post("/v1/tokens", json={"name": "ci", "scopes": ["events:write", "invoices:write",
                                                                         "invoices:read"]}, headers=admin)
    auth = {"Authorization": f"Bearer {made.json()['token']}"}
    token_id = made.json()["id"]
    evs = [event("sandbox.running", "2026-01-10T10:00:00Z", template="giga-max"),
           event("sandbox.stopped", "2026-01-10T11:00:00Z")]
    assert (await client.post("/v1/events", json=evs, headers={**auth, **BATCH})).status_code == 202
    assert (await client.post("/v1/billing-runs", json=JAN, headers=auth)).status_code == 201
    # A late event for January: billed as an adjustment on the current period's draft
    # (test_adjustments_are_in_the_trail_when_their_draft_is_finalized), nothing finalized here.
    late = [event("sandbox.running", "2026-01-20T10:00:00Z", template="giga-max", sandbox_id="sb_late"),
            event("sandbox.stopped", "2026-01-20T10:30:00Z", sandbox_id="sb_late"),
            event("sandbox.running", "2026-02-03T10:00:00Z", template="giga-max", sandbox_id="sb_feb"),
            event("sandbox.stopped", "2026-02-03T11:00:00Z", sandbox_id="sb_feb")]
    assert (await client.post("/v1/events", json=late, headers={**auth, **BATCH})).status_code == 202
    assert (await client.post("/v1/billing-runs", json=FEB, headers=auth)).status_code == 201
    invoices = {i["period_start"]: i for i in (await client.get("/v1/invoices", headers=auth)).json()["items"]}
    jan, feb = invoices[JAN["period_start"]], invoices[FEB["period_start"]]
    assert (await client.post(f"/v1/invoices/{feb['id']}/void", headers=auth)).status_code == 200
    version = {"effective_from": "2099-01-01T00:00:00Z",
               "prices": {"giga-max": {"hourly": "1.00", "extension": "0.25"}}}
    version["prices"].update({t: {"hourly": "0.10", "extension": "0.025"}
                              for t in ("giga-mini", "giga-standard", "giga-pro", "linux-toolkit-standard")})
    assert (await client.post("/v1/prices", json=version, headers=admin)).status_code == 201
    assert (await client.delete(f"/v1/tokens/{token_id}", headers=admin)).status_code == 204
    # Settlements: one paying January's invoice (confirmed, then reorged), one rejected.
    paying = settlement(invoice_id=jan["id"], status=Status.CONFIRMED)
    await _insert(db, paying, None, on_settlement_change)
    await _save_check(db, paying, chain.Verdict(Status.REORGED, Reason.BLOCK_NOT_CANONICAL, block_number=7,
                                                block_hash="0x" + "a" * 64, log_index=1),
                      None, settings, asked_chain=True, on_change=on_settlement_change)
    rejected = settlement(kind="credit")
    await _insert(db, rejected, None, on_settlement_change)
    await _save_check(db, rejected, chain.Verdict(Status.REJECTED, Reason.INVALID_SIGNATURE), None, settings,
                      asked_chain=True, on_change=on_settlement_change)

    page1 = await entries(client, admin, limit=5)
    assert len(page1["items"]) == 5 and page1["next_cursor"] == "5"
    rest = await entries(client, admin, after=page1["next_cursor"])
    log = page1["items"] + rest["items"]
    assert rest["next_cursor"] is None
    assert [(e["kind"], e["subject"]) for e in log] == [
        (audit.TOKEN_CREATED, token_id),
        (audit.INVOICE_FINALIZED, jan["id"]),
        (audit.INVOICE_FINALIZED, feb["id"]),
        (audit.INVOICE_VOIDED, feb["id"]),
        (audit.PRICE_VERSION_ADDED, "2099-01-01T00:00:00Z"),
        (audit.TOKEN_REVOKED, token_id),
        (audit.INVOICE_PAID, jan["id"]),
        (audit.SETTLEMENT_CONFIRMED, paying.id),
        (audit.INVOICE_UNPAID, jan["id"]),
        (audit.SETTLEMENT_REORGED, paying.id),
        (audit.SETTLEMENT_REJECTED, rejected.id),
    ]
    assert [e["seq"] for e in log] == list(range(1, 12))
    assert log[0]["prev_hash"] == GENESIS
    for before, entry in zip(log, log[1:]):
        assert entry["prev_hash"] == before["hash"]
    for entry in log:  # anyone can recompute a hash from the entry as served
        assert entry["hash"] == entry_hash(entry)
        assert entry["at"].endswith("Z") and len(entry["at"]) == 27
    assert log[0]["data"] == {"name": "ci", "scopes": ["events:write", "invoices:write", "invoices:read"],
                              "workspace_id": None, "actor": "operator"}
    assert log[1]["data"]["total"] == "0.800000" and log[1]["data"]["actor"] == token_id
    assert log[7]["data"]["amount"] == "0.800000" and log[7]["data"]["actor"] == "system"
    assert log[10]["data"]["reason"] == Reason.INVALID_SIGNATURE
    assert (await verify_chain(db)).ok


async def test_audit_is_admin_only_and_checks_its_parameters(client, admin, make_token):
    reader = await make_token("invoices:read")
    assert (await client.get("/v1/audit", headers=reader)).status_code == 403
    assert (await client.get("/v1/audit")).status_code == 401
    for params in ({"after": "x"}, {"after": "-1"}, {"limit": 0}, {"limit": 501}):
        resp = await client.get("/v1/audit", params=params, headers=admin)
        assert resp.status_code == 422, params
    listed = await entries(client, admin)  # the reader token's creation
    assert [e["kind"] for e in listed["items"]] == [audit.TOKEN_CREATED] and listed["next_cursor"] is None


async def tamper(db, sql: str) -> None:
    async with db.write() as session:
        await session.execute(text(sql))


@pytest.mark.parametrize("how, bad", [
    ("UPDATE audit_log SET data = replace(data, 'usage:read', 'admin') WHERE seq = 3", 3),
    ("DELETE FROM audit_log WHERE seq = 2", 2),
    ("DELETE FROM audit_log WHERE seq = 4", 4),  # the last one
    ("UPDATE audit_log SET seq = -seq WHERE seq IN (2, 3)", 2),  # reorder: 2 and 3 swap places
])
async def test_verify_names_the_first_bad_seq(db, settings, how, bad):
    for i in range(4):
        await create_token(db, f"t{i}", ["usage:read"], None)
    assert (await verify_chain(db)).ok
    await tamper(db, how)
    if "seq = -seq" in how:
        await tamper(db, "UPDATE audit_log SET seq = CASE seq WHEN -2 THEN 3 ELSE 2 END WHERE seq < 0")
    verdict = await verify_chain(db)
    assert verdict.bad_seq == bad, verdict
    if bad != 3:
        return
    # The command line says the same, and exits 1 (once: a process start is slow).
    env = {**os.environ, "METERING_DATABASE_URL": settings.database_url}
    run = subprocess.run([sys.executable, "-m", "metering.cli", "audit", "verify"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and f"broken at seq {bad}:" in run.stderr, run.stderr


async def test_verify_exits_0_when_intact(db, settings):
    await create_token(db, "t", ["usage:read"], None)
    env = {**os.environ, "METERING_DATABASE_URL": settings.database_url}
    run = subprocess.run([sys.executable, "-m", "metering.cli", "audit", "verify"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "intact: 1 entries" in run.stdout, run.stderr


async def test_a_rewritten_past_is_caught_by_the_daily_anchors(db, settings, tmp_path):
    for i in range(3):
        await create_token(db, f"t{i}", ["usage:read"], None)
    today = parse_time(f"{time.strftime('%Y-%m-%d', time.gmtime())}T00:00:00Z")
    assert await write_anchors(db, settings.reports_dir, today, today + 86_400_000_000) == 1
    anchor = json.loads((tmp_path / "reports" / "@audit" / f"{time.strftime('%Y-%m-%d', time.gmtime())}.json")
                        .read_text())
    assert anchor["seq"] == 3
    # Rewrite entry 2 and re-chain everything after it: the chain alone looks intact ...
    async with db.write() as session:
        rows = (await session.execute(text("SELECT seq, at, kind, subject, data, prev_hash FROM audit_log "
                                           "ORDER BY seq"))).all()
        prev = rows[0].prev_hash
        for row in rows:
            data = json.loads(row.data)
            if row.seq == 2:
                data["scopes"] = ["admin"]
            entry = {"seq": row.seq, "at": row.at, "kind": row.kind, "subject": row.subject, "data": data,
                     "prev_hash": prev}
            prev = entry_hash(entry)
            await session.execute(text("UPDATE audit_log SET data = :d, prev_hash = :p, hash = :h WHERE seq = :s"),
                                  {"d": json.dumps(data), "p": entry["prev_hash"], "h": prev, "s": row.seq})
    assert (await verify_chain(db)).ok
    # ... but not next to a copy of the anchors kept elsewhere.
    verdict = await verify_chain(db, tmp_path / "reports" / "@audit")
    assert verdict.bad_seq == 3 and "anchor" in verdict.problem


async def test_appends_from_two_instances_are_serialized_and_gap_free(db, settings):
    other = create_database(settings.database_url)
    try:
        await asyncio.gather(*(create_token(d, f"t{i}", ["usage:read"], None)
                               for i in range(12) for d in (db, other)))
    finally:
        await other.dispose()
    verdict = await verify_chain(db)
    assert verdict.ok and verdict.checked == 24


async def test_a_change_that_fails_before_commit_leaves_no_entry(client, db, admin, monkeypatch):
    evs = [event("sandbox.running", "2026-01-10T10:00:00Z"), event("sandbox.stopped", "2026-01-10T11:00:00Z")]
    assert (await client.post("/v1/events", json=evs, headers={**admin, **BATCH})).status_code == 202

    async def broken(*args, **kwargs):  # runs after the invoice.finalized entry, before the commit
        raise RuntimeError("injected")

    monkeypatch.setattr(payments, "on_finalized", broken)
    with pytest.raises(RuntimeError):
        await invoice_service.run_billing(db, client.app.state.settings, parse_time(JAN["period_start"]),
                                          parse_time(JAN["period_end"]), prices=client.app.state.prices)
    async with db.read() as session:
        assert (await session.execute(text("SELECT count(*) FROM audit_log"))).scalar() == 0
        assert (await session.execute(text("SELECT count(*) FROM invoices WHERE status <> 'draft'"))).scalar() == 0
    monkeypatch.undo()
    await invoice_service.run_billing(db, client.app.state.settings, parse_time(JAN["period_start"]),
                                      parse_time(JAN["period_end"]), prices=client.app.state.prices)
    async with db.read() as session:
        assert (await session.execute(text("SELECT seq, kind FROM audit_log"))).all() == [(1, audit.INVOICE_FINALIZED)]


@pytest.mark.parametrize("command", [
    ["tokens", "create", "--name", "k", "--scope", "usage:read"],
    ["billing", "run", "--period-start", JAN["period_start"], "--period-end", JAN["period_end"]],
])
async def test_killed_between_the_change_and_its_commit_stores_neither(client, admin, db, settings, tmp_path,
                                                                        command):
    """The CLI killed (SIGKILL) once its first entry is written, before the commit."""
    evs = [event("sandbox.running", "2026-01-10T10:00:00Z"), event("sandbox.stopped", "2026-01-10T11:00:00Z")]
    assert (await client.post("/v1/events", json=evs, headers={**admin, **BATCH})).status_code == 202
    marker = tmp_path / "paused"
    env = {**os.environ, "METERING_DATABASE_URL": settings.database_url, "METERING_TEST_AUDIT_PAUSE": str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "metering.cli", *command], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    async with db.read() as session:
        assert (await session.execute(text("SELECT count(*) FROM api_tokens"))).scalar() == 0
        assert (await session.execute(text("SELECT count(*) FROM invoices WHERE status <> 'draft'"))).scalar() == 0
        assert (await session.execute(text("SELECT count(*) FROM audit_log"))).scalar() == 0
    # The seq it had taken is taken again: no gap.
    await create_token(db, "after", ["usage:read"], None)
    verdict = await verify_chain(db)
    assert verdict.ok and verdict.checked == 1


async def test_the_daily_report_job_writes_each_days_last_hash(client, admin, db, settings):
    from pathlib import Path

    from metering.core.periods import DAY_US, floor_to
    from metering.core.timeutil import format_time
    from metering.scheduler.jobs import JobContext, reports

    today = floor_to(now_us(), "day")
    evs = [event("sandbox.running", format_time(today - DAY_US + 3_600_000_000)),
           event("sandbox.stopped", format_time(today - DAY_US + 7_200_000_000))]
    assert (await client.post("/v1/events", json=evs, headers={**admin, **BATCH})).status_code == 202
    for i in range(2):
        await create_token(db, f"t{i}", ["usage:read"], None)
    ctx = JobContext(db=db, settings=settings, prices=client.app.state.prices, now_us=today + 2 * DAY_US)
    assert (await reports(ctx)).outcome == "ok"
    anchors = Path(settings.reports_dir) / "@audit"
    # Yesterday had no entry yet; today's last one is seq 2.
    [only] = sorted(anchors.glob("*.json"))
    async with db.read() as session:
        last = (await session.execute(text("SELECT hash FROM audit_log WHERE seq = 2"))).scalar()
    assert json.loads(only.read_text()) == {"day": only.stem, "seq": 2, "hash": last}
    assert only.stem == time.strftime("%Y-%m-%d", time.gmtime(today // 1_000_000))


async def test_budget_set_and_deleted_are_in_the_trail(client, admin):
    body = {"amount": "100.000000", "thresholds": [50, 100]}
    assert (await client.put("/v1/workspaces/ws_b/budget", json=body, headers=admin)).status_code == 200
    assert (await client.delete("/v1/workspaces/ws_b/budget", headers=admin)).status_code == 204
    assert (await client.delete("/v1/workspaces/ws_b/budget", headers=admin)).status_code == 404  # nothing changed
    found = [(e["kind"], e["subject"], {k: v for k, v in e["data"].items() if k != "actor"})
             for e in (await entries(client, admin))["items"]]
    assert found == [(audit.BUDGET_SET, "ws_b", {"amount": "100.000000", "thresholds": [50, 100]}),
                     (audit.BUDGET_DELETED, "ws_b", {})]


async def test_adjustments_are_in_the_trail_when_their_draft_is_finalized(client, admin, db, settings):
    evs = [event("sandbox.running", "2026-01-10T10:00:00Z", template="giga-max"),
           event("sandbox.stopped", "2026-01-10T11:00:00Z")]
    assert (await client.post("/v1/events", json=evs, headers={**admin, **BATCH})).status_code == 202
    assert (await client.post("/v1/billing-runs", json=JAN, headers=admin)).status_code == 201
    late = [event("sandbox.running", "2026-01-20T10:00:00Z", template="giga-max", sandbox_id="sb_late"),
            event("sandbox.stopped", "2026-01-20T10:30:00Z", sandbox_id="sb_late")]
    assert (await client.post("/v1/events", json=late, headers={**admin, **BATCH})).status_code == 202
    # The current period's draft takes January's late half hour; billed once it has ended, it is final.
    start, end = period_bounds(now_us(), settings.billing.period)
    await invoice_service.run_billing(db, settings, start, end, prices=client.app.state.prices)
    assert not [e for e in (await entries(client, admin))["items"] if e["kind"] == audit.ADJUSTMENT_BILLED]
    later = end + settings.billing.grace_seconds * 1_000_000 + 1
    await invoice_service.run_billing(db, settings, start, end, now_us=later, prices=client.app.state.prices)
    log = (await entries(client, admin))["items"]
    billed = [e for e in log if e["kind"] == audit.ADJUSTMENT_BILLED]
    assert len(billed) == 1 and billed[0]["data"]["amount"] == "0.400000"
    assert billed[0]["data"]["lines"][0]["original_period_start"] == JAN["period_start"]
    assert [e["kind"] for e in log].count(audit.INVOICE_FINALIZED) == 2
