"""Invoices and billing runs through HTTP."""

from msgspec.structs import replace
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from tests.factories import BATCH, event

JAN = {"period_start": "2026-01-01T00:00:00Z", "period_end": "2026-02-01T00:00:00Z"}
FEB = {"period_start": "2026-02-01T00:00:00Z", "period_end": "2026-03-01T00:00:00Z"}
MAR = {"period_start": "2026-03-01T00:00:00Z", "period_end": "2026-04-01T00:00:00Z"}


@pytest.fixture
async def auth(make_token):
    return await make_token("events:write", "usage:read", "invoices:read", "invoices:write")


async def ingest(client, auth, events):
    resp = await client.post("/v1/events", json=events, headers={**auth, **BATCH})
    assert resp.status_code == 202, resp.text


async def bill(client, auth, period):
    resp = await client.post("/v1/billing-runs", json=period, headers=auth)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def invoices(client, auth, **params):
    resp = await client.get("/v1/invoices", params=params, headers=auth)
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


def january(ws="ws_1"):
    return [
        event("sandbox.running", "2026-01-10T10:00:00Z", workspace_id=ws, deployment_id="d1", sandbox_id=f"{ws}_a"),
        event("sandbox.extended", "2026-01-10T10:10:00Z", workspace_id=ws, deployment_id="d1", sandbox_id=f"{ws}_a",
              minutes=30),
        event("sandbox.stopped", "2026-01-10T11:30:00Z", workspace_id=ws, deployment_id="d1", sandbox_id=f"{ws}_a"),
        event("sandbox.running", "2026-01-31T23:00:00Z", workspace_id=ws, deployment_id="d2", sandbox_id=f"{ws}_b",
              template="giga-pro"),
        event("sandbox.stopped", "2026-02-01T01:00:00Z", workspace_id=ws, deployment_id="d2", sandbox_id=f"{ws}_b"),
    ]


async def test_finalized_invoice_with_lines(client, auth):
    await ingest(client, auth, january())
    run = await bill(client, auth, JAN)
    assert run["invoices"] == 1 and run["finalized"] == 1
    assert run["period_start"] == JAN["period_start"] and run["id"]
    [inv] = await invoices(client, auth, workspace_id="ws_1")
    assert inv["status"] == "finalized" and inv["number"] == "INV-000001"
    assert inv["period_start"] == "2026-01-01T00:00:00Z" and inv["period_end"] == "2026-02-01T00:00:00Z"
    lines = [(ln["kind"], ln["deployment_id"], ln["template"], ln["quantity"], ln["unit_price"], ln["amount"])
             for ln in inv["lines"]]
    assert lines == [
        ("extension", "d1", "giga-mini", 2, "0.025000", "0.050000"),
        ("running", "d1", "giga-mini", "5400.000000", "0.100000", "0.150000"),
        ("running", "d2", "giga-pro", "3600.000000", "0.400000", "0.400000"),  # cut at the period end
    ]
    assert (inv["subtotal"], inv["credits"], inv["total"], inv["amount_paid"], inv["amount_due"]) == (
        "0.600000", "0.000000", "0.600000", "0.000000", "0.600000")
    assert inv["finalized_at"].endswith("Z")
    same = (await client.get(f"/v1/invoices/{inv['id']}", headers=auth)).json()
    assert same == inv
    # The rest of the giga-pro interval belongs to February.
    await bill(client, auth, FEB)
    feb = (await invoices(client, auth, period_start=FEB["period_start"]))[0]
    assert [(ln["kind"], ln["amount"]) for ln in feb["lines"]] == [("running", "0.400000")]
    assert feb["number"] == "INV-000002"


async def test_billing_run_is_idempotent(client, auth):
    await ingest(client, auth, january("ws_1") + january("ws_2"))
    first = await bill(client, auth, JAN)
    second = await bill(client, auth, JAN)
    assert (first["invoices"], first["finalized"]) == (second["invoices"], second["finalized"]) == (2, 2)
    assert first["id"] != second["id"]
    items = await invoices(client, auth)
    assert sorted(i["number"] for i in items) == ["INV-000001", "INV-000002"]


async def test_current_period_stays_draft_and_refreshes(client, auth):
    now = datetime.now(timezone.utc)
    month = {"period_start": now.strftime("%Y-%m-01T00:00:00Z"),
             "period_end": datetime(now.year + (now.month == 12), now.month % 12 + 1, 1,
                                    tzinfo=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    start = now.strftime("%Y-%m-01T00:10:00Z")
    await ingest(client, auth, [event("sandbox.extended", start, minutes=15)])
    run = await bill(client, auth, month)
    assert (run["invoices"], run["finalized"]) == (1, 0)
    [draft] = await invoices(client, auth)
    assert draft["status"] == "draft" and draft["number"] is None and draft["total"] == "0.025000"
    await ingest(client, auth, [event("sandbox.extended", start, minutes=30)])
    await bill(client, auth, month)
    [again] = await invoices(client, auth)
    assert again["id"] == draft["id"] and again["total"] == "0.075000" and again["status"] == "draft"


async def test_gap_free_numbers_across_workspaces(client, auth):
    await ingest(client, auth, january("ws_a") + january("ws_b") + january("ws_c"))
    await bill(client, auth, JAN)
    await bill(client, auth, FEB)
    numbers = sorted(i["number"] for i in await invoices(client, auth))
    assert numbers == [f"INV-{n:06d}" for n in range(1, 7)]


async def test_late_events_become_adjustments_on_the_current_draft(client, auth):
    await ingest(client, auth, january())
    await bill(client, auth, JAN)
    [jan] = await invoices(client, auth)
    # Late: a January sandbox we had not heard of.
    await ingest(client, auth, [
        event("sandbox.running", "2026-01-20T10:00:00Z", deployment_id="d1", sandbox_id="late"),
        event("sandbox.stopped", "2026-01-20T12:00:00Z", deployment_id="d1", sandbox_id="late"),
        event("sandbox.extended", "2026-01-20T10:05:00Z", deployment_id="d1", sandbox_id="late", minutes=15),
    ])
    # January's invoice does not move.
    assert (await client.get(f"/v1/invoices/{jan['id']}", headers=auth)).json() == jan
    await bill(client, auth, FEB)
    await bill(client, auth, FEB)  # twice: still one set of adjustments
    feb = (await invoices(client, auth, period_start=FEB["period_start"]))[0]
    assert [ln["kind"] for ln in feb["lines"]] == ["running"]  # February's own usage only
    [draft] = await invoices(client, auth, status="draft")  # the current month's
    adjustments = [ln for ln in draft["lines"] if ln["kind"] == "adjustment"]
    assert [(a["usage_kind"], a["deployment_id"], a["quantity"], a["amount"], a["original_period_start"])
            for a in adjustments] == [
        ("extension", "d1", 1, "0.025000", "2026-01-01T00:00:00Z"),
        ("running", "d1", "7200.000000", "0.200000", "2026-01-01T00:00:00Z"),
    ]
    assert draft["total"] == "0.225000"
    # Nothing counted twice afterwards.
    await bill(client, auth, MAR)
    assert await invoices(client, auth, period_start=MAR["period_start"]) == []
    assert len(await invoices(client, auth, status="draft")) == 1


async def test_finalized_invoice_is_immutable_in_the_database(client, auth, db):
    await ingest(client, auth, january())
    await bill(client, auth, JAN)
    [inv] = await invoices(client, auth)
    for sql in (
        f"UPDATE invoices SET total = 1 WHERE id = '{inv['id']}'",
        f"UPDATE invoices SET status = 'draft' WHERE id = '{inv['id']}'",
        f"UPDATE invoice_lines SET amount = 1 WHERE invoice_id = '{inv['id']}'",
        f"DELETE FROM invoice_lines WHERE invoice_id = '{inv['id']}'",
        f"DELETE FROM invoices WHERE id = '{inv['id']}'",
        f"INSERT INTO invoice_lines (invoice_id, position, kind, quantity, amount, description) "
        f"VALUES ('{inv['id']}', 9, 'running', 1, 1, 'x')",
    ):
        with pytest.raises(Exception, match="immutable"):
            async with db.write() as session:
                await session.execute(text(sql))
    assert (await client.get(f"/v1/invoices/{inv['id']}", headers=auth)).json() == inv


async def test_void(client, auth):
    await ingest(client, auth, january())
    await bill(client, auth, JAN)
    [inv] = await invoices(client, auth)
    resp = await client.post(f"/v1/invoices/{inv['id']}/void", headers=auth)
    assert resp.status_code == 200 and resp.json()["status"] == "void"
    assert resp.json()["amount_due"] == "0.000000"
    again = await client.post(f"/v1/invoices/{inv['id']}/void", headers=auth)
    assert again.status_code == 409
    assert (await client.post("/v1/invoices/inv_missing/void", headers=auth)).status_code == 404


async def test_draft_cannot_be_voided(client, auth):
    now = datetime.now(timezone.utc)
    await ingest(client, auth, [event("sandbox.extended", now.strftime("%Y-%m-%dT00:00:00Z"), minutes=15)])
    day = {"period_start": now.strftime("%Y-%m-01T00:00:00Z"),
           "period_end": datetime(now.year + (now.month == 12), now.month % 12 + 1, 1,
                                  tzinfo=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    await bill(client, auth, day)
    [draft] = await invoices(client, auth)
    assert (await client.post(f"/v1/invoices/{draft['id']}/void", headers=auth)).status_code == 409


@pytest.mark.parametrize("body", [
    {"period_start": "2026-01-02T00:00:00Z", "period_end": "2026-02-01T00:00:00Z"},
    {"period_start": "2026-01-01T00:00:00Z", "period_end": "2026-01-31T00:00:00Z"},
    {"period_start": "junk", "period_end": "2026-02-01T00:00:00Z"},
])
async def test_bad_periods_are_422(client, auth, body):
    resp = await client.post("/v1/billing-runs", json=body, headers=auth)
    assert resp.status_code == 422
    assert resp.headers["content-type"].startswith("application/problem+json")


async def test_tenant_isolation_and_scopes(client, auth, make_token):
    await ingest(client, auth, january("ws_1") + january("ws_2"))
    await bill(client, auth, JAN)
    other = next(i for i in await invoices(client, auth) if i["workspace_id"] == "ws_2")
    bound = await make_token("invoices:read", "invoices:write", workspace_id="ws_1")
    assert (await client.get(f"/v1/invoices/{other['id']}", headers=bound)).status_code == 404
    assert (await client.post(f"/v1/invoices/{other['id']}/void", headers=bound)).status_code == 404
    assert (await client.get("/v1/invoices", params={"workspace_id": "ws_2"}, headers=bound)).status_code == 404
    mine = (await client.get("/v1/invoices", headers=bound)).json()["items"]
    assert {i["workspace_id"] for i in mine} == {"ws_1"}
    reader = await make_token("usage:read")
    assert (await client.get("/v1/invoices", headers=reader)).status_code == 403
    assert (await client.post("/v1/billing-runs", json=JAN, headers=reader)).status_code == 403


async def test_pagination(client, auth):
    await ingest(client, auth, sum((january(f"ws_{n}") for n in range(5)), []))
    await bill(client, auth, JAN)
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/invoices", params=params, headers=auth)).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    assert (await client.get("/v1/invoices", params={"cursor": "!!"}, headers=auth)).status_code == 422
    assert (await client.get("/v1/invoices", params={"limit": 501}, headers=auth)).status_code == 422




async def test_a_draft_whose_usage_vanished_is_dropped(settings, db, admin):
    """Daily periods.  A sandbox seen running yesterday makes a draft for today; its stop, dated
    yesterday, arrives later, and yesterday is finalized (which uses up the usage changes it
    saw).  Today's draft bills nothing any more: the next run must drop it, not keep it."""
    from litestar.testing import AsyncTestClient

    from metering.api.app import create_app

    day = replace(settings, billing=replace(settings.billing, period="day", grace_seconds=0))
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)

    def period(start):
        return {"period_start": f"{start:%Y-%m-%dT%H:%M:%SZ}", "period_end": f"{start + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}"}

    async with AsyncTestClient(app=create_app(day)) as client:
        await ingest(client, admin, [event("sandbox.running", f"{yesterday:%Y-%m-%dT10:%M:%SZ}", workspace_id="ws_v")])
        await bill(client, admin, period(today))
        assert [i["status"] for i in await invoices(client, admin, workspace_id="ws_v")] == ["draft"]
        await ingest(client, admin, [event("sandbox.stopped", f"{yesterday:%Y-%m-%dT12:%M:%SZ}", workspace_id="ws_v")])
        await bill(client, admin, period(yesterday))
        await bill(client, admin, period(today))
        billed = await invoices(client, admin, workspace_id="ws_v")
    assert [(i["period_start"], i["status"], i["total"]) for i in billed] == [
        (period(yesterday)["period_start"], "finalized", "0.200000")]  # two hours of giga-mini
