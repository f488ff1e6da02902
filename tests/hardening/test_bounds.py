"""CONTRACT 1, Bounds: every input has a range; out of range is a 422 naming the field, and
whatever is accepted, at its extremes, can be billed, reported and exported."""

from datetime import datetime, timedelta, timezone
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, assume, given, settings as hsettings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from metering.api.app import create_app
from metering.core.money import format_money, round_micro
from metering.core.periods import floor_to
from metering.core.timeutil import format_time, parse_time
from metering.db import create_database
from metering.exports.columns import DATASETS, FORMATS
from metering.pricing.service import PriceCatalog
from metering.reports.service import write_reports
from tests.factories import BATCH, SINGLE, event, settings_with_pricing

DAY = "start=2026-01-01T00:00:00Z&end=2026-01-02T00:00:00Z"


def problem_fields(resp) -> set:  # type: ignore[no-untyped-def]
    return {e.get("field") for e in resp.json()["errors"]}


@pytest.mark.parametrize(("body", "field"), [
    (event("sandbox.running", "1999-12-31T23:59:59Z"), "time"),
    (event("sandbox.running", "2100-01-01T00:00:00Z"), "time"),
    (event("sandbox.extended", "2026-01-01T00:00:00Z", minutes=1455), "data.minutes"),
    (event("run.queued", "2026-01-01T00:00:00Z", run_id="r", minutes=10**12), "data.minutes"),
])
async def test_out_of_range_events_are_422_naming_the_field(client, admin, body, field):
    resp = await client.post("/v1/events", json=body, headers={**admin, **SINGLE})
    assert resp.status_code == 422, resp.text
    assert field in problem_fields(resp)


async def test_the_largest_extension_is_accepted(client, admin):
    body = event("sandbox.extended", "2026-01-01T00:00:00Z", minutes=1440)
    assert (await client.post("/v1/events", json=body, headers={**admin, **SINGLE})).status_code == 202


@pytest.mark.parametrize(("url", "field"), [
    (f"/v1/workspaces/ws_1/usage?start=1999-12-31T00:00:00Z&end=2026-01-01T00:00:00Z", "start"),
    (f"/v1/workspaces/ws_1/usage?{DAY}&as_of=2100-01-01T00:00:00Z", "as_of"),
    ("/v1/workspaces/ws_1/usage?start=2026-01-01T00:00:00Z&end=9999-01-01T00:00:00Z", "end"),
    ("/v1/prices?at=2100-06-01T00:00:00Z", "at"),
    ("/v1/invoices?period_start=1970-01-01T00:00:00Z", "period_start"),
    ("/v1/reports?start=0001-01-01T00:00:00Z", "start"),
    ("/v1/exports/usage?start=1999-01-01T00:00:00Z&end=2026-01-01T00:00:00Z", "start"),
])
async def test_out_of_range_query_times_are_422_naming_the_field(client, admin, url, field):
    resp = await client.get(url, headers=admin)
    assert resp.status_code == 422, resp.text
    assert field in problem_fields(resp)


@pytest.mark.parametrize(("start", "end"), [
    ("9999-01-01T00:00:00Z", "9999-02-01T00:00:00Z"),  # was a 500
    ("2099-01-01T00:00:00Z", "2099-02-01T00:00:00Z"),  # in range, but not begun
])
async def test_a_billing_run_for_a_period_not_begun_is_422(client, admin, start, end):
    resp = await client.post("/v1/billing-runs", json={"period_start": start, "period_end": end}, headers=admin)
    assert resp.status_code == 422, resp.text
    assert "period_start" in problem_fields(resp)


async def test_a_price_version_past_2100_is_422(client, admin):
    doc = {"effective_from": "2100-01-01T00:00:00Z", "prices": {"giga-mini": {"hourly": "1", "extension": "1"}}}
    resp = await client.post("/v1/prices", json=doc, headers=admin)
    assert resp.status_code == 422 and "effective_from" in resp.text


TEMPLATES = ("giga-mini", "giga-standard", "giga-pro", "giga-max", "linux-toolkit-standard")
MAX_PRICE = "10000"  # dollars: the largest price a book may hold (core.pricing.MAX_PRICE_DOLLARS)
FIRST = "2020-01-01T00:00:00Z"  # the book's first version: the earliest time a template is priced
BOOK = 'run_tiers = ["0.50"]\n[[versions]]\neffective_from = "2020-01-01T00:00:00Z"\n' + "".join(
    f'[versions.prices.{t}]\nhourly = "{MAX_PRICE}"\nextension = "{MAX_PRICE}"\n' for t in TEMPLATES)


@pytest.fixture
async def extreme(db_url, db, tmp_path):
    settings = settings_with_pricing(db_url, tmp_path, BOOK)
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client, settings, set()  # the workspaces its examples used


@hsettings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(id_length=st.sampled_from([1, 128]), minutes=st.sampled_from([15, 1440]), stop=st.booleans(),
       template=st.sampled_from(TEMPLATES), tag=st.uuids())
async def test_accepted_extremes_bill_report_and_export(extreme, admin, id_length, minutes, stop, template, tag):
    client, settings, used = extreme
    now = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    now_text = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    ws = (tag.hex * 4)[:id_length]
    # The examples share one database: a one-character workspace met again (1 in 16) would
    # carry an earlier example's usage, and its total is not this example's.
    assume(ws not in used)
    used.add(ws)
    ids = {"workspace_id": ws, "deployment_id": "d" * id_length, "sandbox_id": ("s" + tag.hex * 4)[:id_length]}
    events = [event("sandbox.running", FIRST, template=template, **ids),
              event("sandbox.extended", FIRST, template=template, minutes=minutes, **ids),
              event("sandbox.extended", now_text, template=template, minutes=minutes, **ids)]
    if stop:
        events.append(event("sandbox.stopped", now_text, **ids))
    resp = await client.post("/v1/events", json=events, headers={**admin, **BATCH})
    assert resp.status_code == 202, resp.text

    # Usage over the whole range any input may take: the exact amount, independently computed.
    as_of = format_time(parse_time(now_text))
    usage = await client.get(f"/v1/workspaces/{ws}/usage", headers=admin, params={
        "start": "2000-01-01T00:00:00Z", "end": "2099-12-31T00:00:00Z", "as_of": as_of})
    assert usage.status_code == 200, usage.text
    seconds = (parse_time(now_text) - parse_time(FIRST)) // 1_000_000
    expected = Fraction(int(MAX_PRICE) * 1_000_000 * seconds, 3600) + 2 * (minutes // 15) * int(MAX_PRICE) * 1_000_000
    assert usage.json()["total"] == format_money(round_micro(expected))

    # Billing the first month (long ended: finalized) and the current one (a draft).
    this_month = format_time(floor_to(parse_time(now_text), "month"))
    for start in (FIRST, this_month):
        end = format_time(floor_to(parse_time(start) + 32 * 86_400_000_000, "month"))
        run = await client.post("/v1/billing-runs", json={"period_start": start, "period_end": end}, headers=admin)
        assert run.status_code == 201, run.text
    invoices = await client.get("/v1/invoices", params={"workspace_id": ws}, headers=admin)
    assert invoices.status_code == 200
    items = invoices.json()["items"]
    periods = {i["period_start"] for i in items}
    # Once an earlier example's run has closed the first month, this workspace's usage there is
    # late usage: an adjustment on the current draft (CONTRACT 6), not an invoice of its own.
    assert this_month in periods and len(items) == len(periods)
    assert FIRST in periods or any(ln["kind"] == "adjustment" for i in items for ln in i["lines"])

    # Reports for the first and the last day, then every export in every format.
    db = create_database(settings.database_url)
    try:
        book = PriceCatalog.from_file(settings.pricing_file).book
        for day in (parse_time(FIRST), floor_to(parse_time(now_text), "day")):
            await write_reports(db, settings, book, day, day + 86_400_000_000)
    finally:
        await db.dispose()
    reports = await client.get("/v1/reports", params={"workspace_id": ws}, headers=admin)
    assert reports.status_code == 200 and len(reports.json()["items"]) == 2
    for report in reports.json()["items"]:
        for link in report["content"].values():
            assert (await client.get(link, headers=admin)).status_code == 200
    for dataset in DATASETS:
        for fmt in FORMATS:
            export = await client.get(f"/v1/exports/{dataset}", headers=admin, params={
                "start": "2000-01-01T00:00:00Z", "end": "2099-12-31T00:00:00Z", "workspace_id": ws, "format": fmt})
            assert export.status_code == 200, (dataset, fmt, export.text[:300])
