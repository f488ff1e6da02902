"""The lifetime guard: overruns listed, one webhook per interval, and ``bill_beyond = false``
cutting usage, invoices, reports and exports alike."""

import csv
import io
import json

from litestar.testing import AsyncTestClient
from sqlalchemy import select

from metering.api.app import create_app
from metering.core.timeutil import parse_time
from metering.invoices.service import run_billing
from metering.pricing.service import PriceCatalog
from metering.reports.service import write_daily_report
from metering.spend.overruns import notify_overruns
from metering.webhooks.models import OutboxEvent
from tests.conftest import ADMIN_TOKEN
from tests.factories import BATCH, event

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def post(client, *events):
    resp = await client.post("/v1/events", json=list(events), headers={**ADMIN, **BATCH})
    assert resp.status_code == 202, resp.text


async def overruns(client, headers=ADMIN, **params):
    resp = await client.get("/v1/sandboxes/overruns", params=params, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


GHOST = [
    # Lives 10:00 + 15 min + one 15-minute extension = 10:30; never stopped.
    event("sandbox.running", "2026-03-10T10:00:00Z", sandbox_id="sb_ghost"),
    event("sandbox.extended", "2026-03-10T10:10:00Z", sandbox_id="sb_ghost", minutes=15),
    # Stopped in time.
    event("sandbox.running", "2026-03-10T10:00:00Z", sandbox_id="sb_ok"),
    event("sandbox.stopped", "2026-03-10T10:14:00Z", sandbox_id="sb_ok"),
    # Extended for an hour: lives until 11:15.
    event("sandbox.running", "2026-03-10T10:00:00Z", sandbox_id="sb_long", template="giga-pro"),
    event("sandbox.extended", "2026-03-10T10:05:00Z", sandbox_id="sb_long", template="giga-pro", minutes=60),
    # Another tenant's ghost, giga-max from 09:00 (lives until 09:15).
    event("sandbox.running", "2026-03-10T09:00:00Z", workspace_id="ws_2", sandbox_id="sb_other", template="giga-max"),
]


async def test_overruns_are_listed_past_lifetime_and_tolerance(client, admin, make_token):
    await post(client, *GHOST)
    # 10:34: sb_ghost is 4 minutes past its lifetime, inside the 5-minute tolerance.
    assert [o["sandbox_id"] for o in (await overruns(client, as_of="2026-03-10T10:34:00Z"))["items"]] == ["sb_other"]
    page = await overruns(client, as_of="2026-03-10T10:40:00Z")
    assert page["next_cursor"] is None
    other, ghost = page["items"]
    assert ghost == {"workspace_id": "ws_1", "deployment_id": "dep_1", "sandbox_id": "sb_ghost",
                     "template": "giga-mini", "started": "2026-03-10T10:00:00Z",
                     "lifetime_end": "2026-03-10T10:30:00Z", "overrun_seconds": "600.000000",
                     "overrun_amount": "0.016667"}  # 10 minutes at 0.10/h
    # giga-max 0.80/h for 1 h 25 min.
    assert (other["sandbox_id"], other["overrun_seconds"], other["overrun_amount"]) == (
        "sb_other", "5100.000000", "1.133333")
    # Paginated, and a bound token sees its own workspace only.
    first = await overruns(client, as_of="2026-03-10T10:40:00Z", limit=1)
    assert [o["sandbox_id"] for o in first["items"]] == ["sb_other"]
    second = await overruns(client, as_of="2026-03-10T10:40:00Z", limit=1, cursor=first["next_cursor"])
    assert [o["sandbox_id"] for o in second["items"]] == ["sb_ghost"] and second["next_cursor"] is None
    bound = await make_token("usage:read", workspace_id="ws_1")
    mine = await overruns(client, bound, as_of="2026-03-10T10:40:00Z")
    assert [o["sandbox_id"] for o in mine["items"]] == ["sb_ghost"]
    resp = await client.get("/v1/sandboxes/overruns", params={"workspace_id": "ws_2"}, headers=bound)
    assert resp.status_code == 404
    # Stopped later: asked about 10:40, it was still overrunning then; at 12:00 it no longer runs.
    await post(client, event("sandbox.stopped", "2026-03-10T11:00:00Z", sandbox_id="sb_ghost"))
    assert [o["sandbox_id"] for o in (await overruns(client, as_of="2026-03-10T10:40:00Z",
                                                     workspace_id="ws_1"))["items"]] == ["sb_ghost"]
    # At 12:00 the ghost no longer runs, and sb_long's lifetime (to 11:15) has run out too.
    late = (await overruns(client, as_of="2026-03-10T12:00:00Z", workspace_id="ws_1"))["items"]
    assert [(o["sandbox_id"], o["lifetime_end"]) for o in late] == [("sb_long", "2026-03-10T11:15:00Z")]


async def test_one_overrun_webhook_per_interval(client, admin, db, settings):
    await post(client, *GHOST)
    book = await PriceCatalog.from_file(settings.pricing_file).refresh(db)
    at = parse_time("2026-03-10T10:40:00Z")
    assert await notify_overruns(db, settings, book, at) == 2
    assert await notify_overruns(db, settings, book, at + 600_000_000) == 0
    # A new interval of the same sandbox that overruns again is a new overrun.
    await post(client, event("sandbox.stopped", "2026-03-10T11:00:00Z", sandbox_id="sb_ghost"),
               event("sandbox.running", "2026-03-10T11:10:00Z", sandbox_id="sb_ghost"))
    # (and sb_long, whose lifetime ran out at 11:15)
    assert await notify_overruns(db, settings, book, parse_time("2026-03-10T11:40:00Z")) == 2
    async with db.read() as session:
        rows = (await session.execute(select(OutboxEvent).where(OutboxEvent.type == "sandbox.overrun")
                                      .order_by(OutboxEvent.id))).scalars().all()
    datas = [json.loads(r.payload) for r in rows]
    assert [(d["sandbox_id"], d["started"]) for d in datas] == [
        ("sb_other", "2026-03-10T09:00:00Z"), ("sb_ghost", "2026-03-10T10:00:00Z"),
        ("sb_long", "2026-03-10T10:00:00Z"), ("sb_ghost", "2026-03-10T11:10:00Z")]
    assert datas[1]["overrun_seconds"] == "600.000000"


async def billed_everywhere(client, db, settings) -> dict[str, str]:
    """What usage, a March invoice draft, the day's report and the usage export bill for ws_1."""
    usage = (await client.get("/v1/workspaces/ws_1/usage", headers=ADMIN, params={
        "start": "2026-03-01T00:00:00Z", "end": "2026-04-01T00:00:00Z", "as_of": "2026-03-11T00:00:00Z"})).json()
    prices = PriceCatalog.from_file(settings.pricing_file)
    start, end = parse_time("2026-03-01T00:00:00Z"), parse_time("2026-04-01T00:00:00Z")
    await run_billing(db, settings, start, end, now_us=end + 60_000_000, prices=prices)
    (invoice,) = (await client.get("/v1/invoices", params={"workspace_id": "ws_1"}, headers=ADMIN)).json()["items"]
    book = await prices.refresh(db)
    day = parse_time("2026-03-10T00:00:00Z")
    await write_daily_report(db, settings, book, "ws_1", day)
    (report,) = (await client.get("/v1/reports", params={"workspace_id": "ws_1"}, headers=ADMIN)).json()["items"]
    content = (await client.get(f"/v1/reports/{report['id']}/content", headers=ADMIN)).json()
    export = await client.get("/v1/exports/usage", headers=ADMIN, params={
        "start": "2026-03-01T00:00:00Z", "end": "2026-04-01T00:00:00Z", "workspace_id": "ws_1", "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(export.text)))
    running = sum(int(r["amount"].replace(".", "")) for r in rows if r["kind"] == "running")
    return {"usage": usage["total"], "invoice": invoice["total"], "report": content["totals"]["amount"],
            "export": f"0.{running:06d}" if running < 1_000_000 else str(running)}


async def test_bill_beyond_false_cuts_everywhere_and_a_late_extension_restores(db, spend_settings, tmp_path):
    settings = spend_settings(lifetime={"bill_beyond": False, "tolerance_seconds": 300})
    async with AsyncTestClient(app=create_app(settings)) as client:
        # A ghost: running 10:00, its stop (12:00) arrived; it lived until 10:15, cut at 10:20.
        await post(client, event("sandbox.running", "2026-03-10T10:00:00Z", sandbox_id="sb_g"),
                   event("sandbox.stopped", "2026-03-10T12:00:00Z", sandbox_id="sb_g"))
        # 20 minutes at 0.10/h.
        assert set((await billed_everywhere(client, db, settings)).values()) == {"0.033333"}
        # The overruns dataset and the day's report say what ran past 10:15 and what of it is billed.
        export = await client.get("/v1/exports/overruns", headers=ADMIN, params={
            "start": "2026-03-01T00:00:00Z", "end": "2026-04-01T00:00:00Z", "format": "csv"})
        assert export.status_code == 200, export.text
        (row,) = csv.DictReader(io.StringIO(export.text))
        assert row == {"workspace_id": "ws_1", "deployment_id": "dep_1", "sandbox_id": "sb_g",
                       "template": "giga-mini", "started": "2026-03-10T10:00:00Z",
                       "lifetime_end": "2026-03-10T10:15:00Z", "start": "2026-03-10T10:15:00Z",
                       "end": "2026-03-10T12:00:00Z", "seconds": "6300.000000", "amount": "0.175000",
                       "billed_amount": "0.008333"}  # 10:15-10:20, inside the tolerance
        (report,) = (await client.get("/v1/reports", params={"workspace_id": "ws_1"}, headers=ADMIN)).json()["items"]
        (section,) = (await client.get(f"/v1/reports/{report['id']}/content", headers=ADMIN)).json()["overruns"]
        assert (section["overrun_amount"], section["billed_amount"]) == ("0.175000", "0.008333")
        # The extension arrives late, timed after the cut (10:25, 30 minutes): lifetime until
        # 10:45, billed to 10:50 (50 minutes), plus the extension's 2 x 0.025 in usage.
        await post(client, event("sandbox.extended", "2026-03-10T10:25:00Z", sandbox_id="sb_g", minutes=30))
        billed = await billed_everywhere(client, db, settings)
        assert billed["export"] == "0.083333"  # running rows only
        assert {billed["usage"], billed["invoice"], billed["report"]} == {"0.133333"}
        # One before the cut (10:05, 90 minutes: lifetime until 12:15) restores up to 12:00, when it stopped.
        await post(client, event("sandbox.extended", "2026-03-10T10:05:00Z", sandbox_id="sb_g", minutes=90))
        billed = await billed_everywhere(client, db, settings)
        assert billed["export"] == "0.200000"  # 10:00-12:00 at 0.10/h
        assert {billed["usage"], billed["invoice"], billed["report"]} == {"0.400000"}  # + 8 extensions


async def test_bill_beyond_true_bills_the_ghost_in_full(client, db, settings):
    await post(client, event("sandbox.running", "2026-03-10T10:00:00Z", sandbox_id="sb_g"),
               event("sandbox.stopped", "2026-03-10T12:00:00Z", sandbox_id="sb_g"))
    assert set((await billed_everywhere(client, db, settings)).values()) == {"0.200000"}


async def test_two_apps_in_one_process_each_bill_by_their_own_settings(db, spend_settings):
    """``[lifetime]`` travels with the settings, not the process: an app (or a billing run)
    made with ``bill_beyond = false`` cuts the ghost while one with the default, alive in
    the same process and created after it, bills it in full, whichever is asked first."""
    cut = spend_settings(lifetime={"bill_beyond": False, "tolerance_seconds": 300})
    full = spend_settings()
    march = {"start": "2026-03-01T00:00:00Z", "end": "2026-04-01T00:00:00Z"}
    start, end = parse_time(march["start"]), parse_time(march["end"])
    prices = PriceCatalog.from_file(full.pricing_file)

    async def billed(client) -> dict[str, str]:
        usage = (await client.get("/v1/workspaces/ws_1/usage", headers=ADMIN,
                                  params={**march, "as_of": "2026-03-11T00:00:00Z"})).json()
        cost = (await client.get("/v1/workspaces/ws_1/cost", headers=ADMIN,
                                 params={"as_of": "2026-03-11T00:00:00Z"})).json()
        export = await client.get("/v1/exports/usage", headers=ADMIN, params={**march, "format": "csv"})
        (row,) = csv.DictReader(io.StringIO(export.text))
        return {"usage": usage["total"], "cost": cost["spent"], "export": row["amount"]}

    async def draft_total(client, settings) -> str:
        # March not ended at 2026-03-20: each run refreshes the draft by its own settings.
        await run_billing(db, settings, start, end, now_us=parse_time("2026-03-20T00:00:00Z"), prices=prices)
        (invoice,) = (await client.get("/v1/invoices", params={"workspace_id": "ws_1"}, headers=ADMIN)).json()["items"]
        assert invoice["status"] == "draft"
        return invoice["total"]

    async with AsyncTestClient(app=create_app(cut)) as cutting, AsyncTestClient(app=create_app(full)) as in_full:
        # The ghost of the test above: running 10:00, stopped 12:00, lived until 10:15, cut at 10:20.
        await post(cutting, event("sandbox.running", "2026-03-10T10:00:00Z", sandbox_id="sb_g"),
                   event("sandbox.stopped", "2026-03-10T12:00:00Z", sandbox_id="sb_g"))
        for _ in range(2):  # interleaved: neither app's answer depends on which was made or asked last
            assert await billed(cutting) == dict.fromkeys(("usage", "cost", "export"), "0.033333")  # 20 min
            assert await billed(in_full) == dict.fromkeys(("usage", "cost", "export"), "0.200000")  # 2 h
        assert await draft_total(cutting, cut) == "0.033333"
        assert await draft_total(cutting, full) == "0.200000"
        assert await draft_total(in_full, cut) == "0.033333"
