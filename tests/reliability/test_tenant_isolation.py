"""A token bound to workspace A never gets B's data: 404 for B's objects, 403 for writes
into B, 403 without the scope, 401 once revoked."""

import pytest

from metering.core.timeutil import parse_time
from metering.pricing.service import PriceCatalog
from metering.reports.service import write_daily_report
from tests.factories import BATCH, event
from tests.invoices.test_credits_and_payments import settle

JAN = {"start": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00Z"}
RUN = {"period_start": JAN["start"], "period_end": JAN["end"]}
ALL_SCOPES = ["events:write", "usage:read", "invoices:read", "invoices:write", "settlements:write",
              "settlements:read", "exports:read"]


@pytest.fixture
async def world(client, admin, db, settings):
    """Workspaces A and B, each with usage, a finalized invoice, a settlement and a report."""
    for ws in ("ws_a", "ws_b"):
        evs = [event("sandbox.running", "2026-01-10T10:00:00Z", workspace_id=ws, sandbox_id=f"sb_{ws}"),
               event("sandbox.stopped", "2026-01-10T11:00:00Z", workspace_id=ws, sandbox_id=f"sb_{ws}")]
        assert (await client.post("/v1/events", json=evs, headers={**admin, **BATCH})).status_code == 202
    assert (await client.post("/v1/billing-runs", json=RUN, headers=admin)).status_code == 201
    invoices = {i["workspace_id"]: i["id"] for i in (await client.get("/v1/invoices", headers=admin)).json()["items"]}
    settlements = {ws: await settle(db, "credit", 1_000_000, workspace_id=ws) for ws in ("ws_a", "ws_b")}
    book = PriceCatalog.from_file(settings.pricing_file).book
    for ws in ("ws_a", "ws_b"):
        assert await write_daily_report(db, settings, book, ws, parse_time("2026-01-10T00:00:00Z"))
    reports = {r["workspace_id"]: r["id"] for r in (await client.get("/v1/reports", headers=admin)).json()["items"]}
    return {"invoice": invoices, "settlement": settlements, "report": reports}


async def test_bound_token_gets_404_for_every_foreign_object(client, make_token, world):
    a = await make_token(*ALL_SCOPES, workspace_id="ws_a")
    foreign = [
        ("GET", "/v1/workspaces/ws_b/usage", JAN),
        ("GET", "/v1/invoices", {"workspace_id": "ws_b"}),
        ("GET", f"/v1/invoices/{world['invoice']['ws_b']}", None),
        ("POST", f"/v1/invoices/{world['invoice']['ws_b']}/void", None),
        ("GET", "/v1/settlements", {"workspace_id": "ws_b"}),
        ("GET", f"/v1/settlements/{world['settlement']['ws_b']}", None),
        ("GET", "/v1/reports", {"workspace_id": "ws_b"}),
        ("GET", f"/v1/reports/{world['report']['ws_b']}", None),
        ("GET", f"/v1/reports/{world['report']['ws_b']}/content", {"format": "csv"}),
        *[("GET", f"/v1/exports/{d}", {**JAN, "workspace_id": "ws_b"})
          for d in ("usage", "invoices", "invoice_lines", "settlements")],
    ]
    for method, path, params in foreign:
        resp = await client.request(method, path, params=params, headers=a)
        assert resp.status_code == 404, (method, path, resp.status_code)
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert "ws_b" not in resp.text.replace("'ws_b'", "") or "no " in resp.json()["detail"]
    # Its own objects are there, and lists without a filter hold only its workspace.
    assert (await client.get(f"/v1/invoices/{world['invoice']['ws_a']}", headers=a)).status_code == 200
    assert (await client.get(f"/v1/settlements/{world['settlement']['ws_a']}", headers=a)).status_code == 200
    assert (await client.get(f"/v1/reports/{world['report']['ws_a']}", headers=a)).status_code == 200
    for path, kind in (("/v1/invoices", "invoice"), ("/v1/settlements", "settlement"), ("/v1/reports", "report")):
        items = (await client.get(path, headers=a)).json()["items"]
        assert [i["id"] for i in items] == [world[kind]["ws_a"]], path
    export = await client.get("/v1/exports/usage", params=JAN, headers=a)
    assert export.status_code == 200 and "ws_b" not in export.text and "ws_a" in export.text


async def test_bound_token_cannot_write_into_another_workspace(client, make_token, world):
    a = await make_token(*ALL_SCOPES, workspace_id="ws_a")
    evs = [event("sandbox.running", "2026-01-11T10:00:00Z", workspace_id="ws_a", sandbox_id="x"),
           event("sandbox.running", "2026-01-11T10:00:00Z", workspace_id="ws_b", sandbox_id="x")]
    resp = await client.post("/v1/events", json=evs, headers={**a, **BATCH})
    assert resp.status_code == 403
    assert resp.json()["errors"][0] == {"index": 1, "field": "data.workspace_id",
                                        "message": resp.json()["errors"][0]["message"]}
    # A billing run bills every workspace: not for a token bound to one.
    assert (await client.post("/v1/billing-runs", json=RUN, headers=a)).status_code == 403


async def test_scopes_and_revocation(client, admin, make_token, world):
    reader = await make_token("usage:read")
    for method, path, params in [("GET", "/v1/invoices", None), ("GET", "/v1/settlements", None),
                                 ("GET", "/v1/exports/usage", JAN), ("POST", "/v1/billing-runs", None),
                                 ("POST", "/v1/tokens", None), ("POST", "/v1/prices", None)]:
        resp = await client.request(method, path, params=params, headers=reader, json={})
        assert resp.status_code == 403, (method, path, resp.status_code)
    made = (await client.post("/v1/tokens", json={"name": "x", "scopes": ALL_SCOPES}, headers=admin)).json()
    token = {"Authorization": f"Bearer {made['token']}"}
    assert (await client.get("/v1/workspaces/ws_a/usage", params=JAN, headers=token)).status_code == 200
    assert (await client.delete(f"/v1/tokens/{made['id']}", headers=admin)).status_code == 204
    for path in ("/v1/workspaces/ws_a/usage", "/v1/invoices", "/v1/settlements", "/v1/reports"):
        assert (await client.get(path, params=JAN, headers=token)).status_code == 401
