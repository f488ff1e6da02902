"""Late usage goes on the current period's draft; a negative subtotal is carried forward."""

import csv
import io
import json
from pathlib import Path

import pytest

from metering.core.periods import period_bounds
from metering.core.timeutil import format_time, parse_time
from metering.db.base import now_us
from metering.invoices.service import run_billing
from metering.pricing.service import PriceCatalog
from metering.reports.service import write_daily_report
from metering.scheduler.jobs import JobContext, billing
from tests.factories import event
from tests.invoices.test_credits_and_payments import settle
from tests.invoices.test_invoices_api import FEB, JAN, MAR, bill, ingest, invoices, january


@pytest.fixture
async def auth(make_token):
    return await make_token("events:write", "invoices:read", "invoices:write", "exports:read")


def current_month() -> dict[str, str]:
    start, end = period_bounds(now_us(), "month")
    return {"period_start": format_time(start), "period_end": format_time(end)}


def one_hour(ws: str, day: str, sandbox: str, template="giga-mini") -> list[dict]:
    return [event("sandbox.running", f"{day}T10:00:00Z", workspace_id=ws, sandbox_id=sandbox, deployment_id="d1",
                  template=template),
            event("sandbox.stopped", f"{day}T11:00:00Z", workspace_id=ws, sandbox_id=sandbox, deployment_id="d1")]


def adjustments(invoice: dict) -> list[tuple]:
    return [(a["original_period_start"], a["usage_kind"], a["quantity"], a["amount"])
            for a in invoice["lines"] if a["kind"] == "adjustment"]


async def test_late_usage_of_any_age_lands_on_the_current_draft(client, auth):
    await ingest(client, auth, january("ws_1"))
    for period in (JAN, FEB, MAR):
        await bill(client, auth, period)
    before = {inv["id"]: inv for inv in await invoices(client, auth)}
    assert {inv["status"] for inv in before.values()} == {"finalized"}
    # Two periods late for ws_1; and for ws_2, which had no invoice in February at all.
    await ingest(client, auth, one_hour("ws_1", "2026-01-20", "late_jan") + one_hour("ws_2", "2026-02-20", "late_feb"))
    # An ended period billed again: nothing finalized moves, no new invoice for it.
    again = await bill(client, auth, FEB)
    assert (again["invoices"], again["finalized"]) == (1, 1)  # ws_1's, as before
    await bill(client, auth, MAR)
    after = await invoices(client, auth)
    for inv in after:
        if inv["id"] in before:
            assert inv == before[inv["id"]]
        else:  # the only new invoices: this month's drafts, holding the adjustments
            assert inv["status"] == "draft" and inv["period_start"] == current_month()["period_start"]
    drafts = {inv["workspace_id"]: inv for inv in after if inv["status"] == "draft"}
    assert adjustments(drafts["ws_1"]) == [("2026-01-01T00:00:00Z", "running", "3600.000000", "0.100000")]
    assert adjustments(drafts["ws_2"]) == [("2026-02-01T00:00:00Z", "running", "3600.000000", "0.100000")]
    assert drafts["ws_2"]["total"] == "0.100000"
    # No finalized invoice holds an adjustment for another period.
    assert not any(adjustments(inv) for inv in after if inv["status"] != "draft")
    # Billed again, still one set of adjustments.
    await bill(client, auth, current_month())
    assert {inv["workspace_id"]: adjustments(inv) for inv in await invoices(client, auth, status="draft")} == {
        ws: adjustments(inv) for ws, inv in drafts.items()}


async def test_a_scheduler_tick_finds_late_usage_beyond_its_lookback(client, auth, db, settings):
    await ingest(client, auth, january("ws_1"))
    await bill(client, auth, JAN)
    await ingest(client, auth, one_hour("ws_1", "2026-01-25", "late"))
    ctx = JobContext(db, settings, PriceCatalog.from_file(settings.pricing_file), now_us())
    assert settings.scheduler.billing_lookback_periods == 1  # January is far behind it
    assert (await billing(ctx)).outcome == "ok"
    [draft] = await invoices(client, auth, status="draft")
    assert adjustments(draft) == [("2026-01-01T00:00:00Z", "running", "3600.000000", "0.100000")]


async def test_late_usage_of_a_period_not_finalized_yet_stays_on_its_own_invoice(client, auth):
    # January is not closed (no final run yet): its usage is billed when it is, not as adjustments.
    await ingest(client, auth, january("ws_1"))
    await bill(client, auth, current_month())
    assert await invoices(client, auth, status="draft") == []
    await bill(client, auth, JAN)
    [jan] = await invoices(client, auth, period_start=JAN["period_start"])
    assert jan["total"] == "0.600000" and not adjustments(jan)


async def test_negative_subtotal_is_carried_forward_before_prepaid_credit(client, auth, db, settings):
    prices = PriceCatalog.from_file(settings.pricing_file)

    async def run(period, at):
        await run_billing(db, settings, parse_time(period["period_start"]), parse_time(period["period_end"]),
                          now_us=parse_time(at), prices=prices)

    # A sandbox left running from January 10 10:00: January bills it to the month's end.
    await ingest(client, auth, [event("sandbox.running", "2026-01-10T10:00:00Z", sandbox_id="sb_x")])
    await run(JAN, "2026-02-01T02:00:00Z")
    [jan] = await invoices(client, auth, period_start=JAN["period_start"])
    assert jan["total"] == "51.800000"  # 518 hours at 0.10
    # Its stop arrives late: it ran one hour.  February's draft takes back 51.70.
    await ingest(client, auth, [event("sandbox.stopped", "2026-01-10T11:00:00Z", sandbox_id="sb_x")])
    await run(FEB, "2026-02-15T00:00:00Z")
    [feb] = await invoices(client, auth, period_start=FEB["period_start"])
    assert adjustments(feb) == [("2026-01-01T00:00:00Z", "running", "-1861200.000000", "-51.700000")]
    assert (feb["status"], feb["subtotal"], feb["total"]) == ("draft", "-51.700000", "0.000000")
    balance = (await client.get("/v1/workspaces/ws_1/balance", headers=auth)).json()
    assert balance["credit"] == "0.000000"  # a draft carries nothing yet
    await run(FEB, "2026-03-01T02:00:00Z")
    [feb] = await invoices(client, auth, period_start=FEB["period_start"])
    assert (feb["status"], feb["subtotal"], feb["credits"], feb["carried_forward"], feb["total"], feb["amount_due"]) \
        == ("finalized", "-51.700000", "0.000000", "51.700000", "0.000000", "0.000000")
    assert feb["lines"][-1]["kind"] == "carry_forward" and feb["lines"][-1]["amount"] == "51.700000"
    assert (await client.get("/v1/workspaces/ws_1/balance", headers=auth)).json() == {
        "workspace_id": "ws_1", "credit": "51.700000", "carried_credit": "51.700000", "prepaid_credit": "0.000000"}
    # The daily report of the day February was finalized shows the credit carried forward.
    march_1 = parse_time("2026-03-01T00:00:00Z")
    await write_daily_report(db, settings, await prices.refresh(db), "ws_1", march_1)
    report = json.loads((Path(settings.reports_dir) / "ws_1/2026-03-01.json").read_text())
    assert report["carried_credit"] == {"balance": "51.700000", "carried_forward": "51.700000",
                                        "applied": "0.000000"}
    rows = list(csv.DictReader(io.StringIO((Path(settings.reports_dir) / "ws_1/2026-03-01.csv").read_text())))
    assert [(r["record"], r["amount"]) for r in rows if r["record"] == "carried_credit"] == [
        ("carried_credit", "51.700000")]
    # March: 0.80 of usage, with 1.00 of prepaid credit too: the carried credit goes first.
    await settle(db, "credit", 1_000_000, workspace_id="ws_1")
    await ingest(client, auth, one_hour("ws_1", "2026-03-10", "sb_mar", template="giga-max"))
    await run(MAR, "2026-04-01T02:00:00Z")
    [mar] = await invoices(client, auth, period_start=MAR["period_start"])
    assert [(ln["kind"], ln["amount"]) for ln in mar["lines"]] == [("running", "0.800000"),
                                                                   ("carried_credit", "-0.800000")]
    assert (mar["subtotal"], mar["credits"], mar["carried_credit"], mar["total"]) == (
        "0.800000", "0.800000", "0.800000", "0.000000")
    assert (await client.get("/v1/workspaces/ws_1/balance", headers=auth)).json()["credit"] == "51.900000"
    # Finance sees both sides in the exports: invoice_lines and invoices.
    lines = await _csv(client, auth, "invoice_lines")
    carried = [(r["kind"], r["amount"]) for r in lines if r["kind"] in ("carry_forward", "carried_credit")]
    assert carried == [("carry_forward", "51.700000"), ("carried_credit", "-0.800000")]
    rows = {r["period_start"][:7]: r for r in await _csv(client, auth, "invoices")}
    assert (rows["2026-02"]["carried_forward"], rows["2026-03"]["carried_credit"]) == ("51.700000", "0.800000")


async def _csv(client, auth, dataset):
    resp = await client.get(f"/v1/exports/{dataset}", headers=auth,
                            params={"start": "2026-01-01T00:00:00Z", "end": "2026-05-01T00:00:00Z"})
    assert resp.status_code == 200, resp.text
    return list(csv.DictReader(io.StringIO(resp.text)))


async def test_balance_endpoint_scopes_and_tenants(client, make_token):
    bound = await make_token("invoices:read", workspace_id="ws_1")
    assert (await client.get("/v1/workspaces/ws_1/balance", headers=bound)).json() == {
        "workspace_id": "ws_1", "credit": "0.000000", "carried_credit": "0.000000", "prepaid_credit": "0.000000"}
    assert (await client.get("/v1/workspaces/ws_2/balance", headers=bound)).status_code == 404
    reader = await make_token("usage:read")
    assert (await client.get("/v1/workspaces/ws_1/balance", headers=reader)).status_code == 403
    assert (await client.get("/v1/workspaces/ws_1/balance")).status_code == 401
    schema = (await client.get("/schema/openapi.json")).json()
    assert schema["paths"]["/v1/workspaces/{workspace_id}/balance"]["get"]["operationId"] == "getBalance"
