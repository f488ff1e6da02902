"""GET /v1/reports and /v1/reports/{id}/content: listing, content, tenant isolation."""

import csv
import io

import pytest

from metering.scheduler.runner import Scheduler
from tests.reports.data import EXPECTED_REPORTS, WS1_JAN5_ITEMS, WS1_JAN5_RUNS, WS1_JAN5_TOTALS, post_day


@pytest.fixture
async def reports(client, make_token, db, settings):
    await post_day(client, make_token)
    assert (await Scheduler(db, settings).run_job("reports")).outcome == "ok"


async def listing(client, headers, **params):
    resp = await client.get("/v1/reports", params=params, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_list_all_oldest_day_first(client, admin, reports):
    body = await listing(client, admin)
    assert [r["day"] for r in body["items"]] == ["2026-01-05", "2026-01-05", "2026-01-06"]
    assert {(r["workspace_id"], r["day"]) for r in body["items"]} == EXPECTED_REPORTS
    assert body["next_cursor"] is None
    first = next(r for r in body["items"] if r["workspace_id"] == "ws_1" and r["day"] == "2026-01-05")
    assert first["kind"] == "daily_usage"
    assert (first["start"], first["end"]) == ("2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z")
    assert first["created_at"].endswith("Z")
    assert first["content"] == {"json": f"/v1/reports/{first['id']}/content?format=json",
                                "csv": f"/v1/reports/{first['id']}/content?format=csv"}


async def test_filters_and_pagination(client, admin, reports):
    ws1 = await listing(client, admin, workspace_id="ws_1")
    assert [r["day"] for r in ws1["items"]] == ["2026-01-05", "2026-01-06"]
    jan6 = await listing(client, admin, start="2026-01-06T00:00:00Z", end="2026-01-07T00:00:00Z")
    assert [(r["workspace_id"], r["day"]) for r in jan6["items"]] == [("ws_1", "2026-01-06")]
    assert (await listing(client, admin, kind="daily_usage"))["items"]
    seen, cursor = [], None
    while True:
        page = await listing(client, admin, limit=1, **({"cursor": cursor} if cursor else {}))
        assert len(page["items"]) <= 1
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [r["id"] for r in (await listing(client, admin))["items"]]


@pytest.mark.parametrize("params", [
    {"kind": "monthly"}, {"start": "yesterday"}, {"limit": "0"}, {"limit": "501"}, {"cursor": "nope!"},
    {"start": "2026-01-06T00:00:00Z", "end": "2026-01-05T00:00:00Z"},
])
async def test_bad_parameters_are_422(client, admin, params):
    resp = await client.get("/v1/reports", params=params, headers=admin)
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")


async def test_content_json_and_csv(client, admin, reports):
    (report,) = (await listing(client, admin, workspace_id="ws_1", end="2026-01-06T00:00:00Z"))["items"]
    as_json = await client.get(f"/v1/reports/{report['id']}/content", headers=admin)
    assert as_json.status_code == 200
    assert as_json.headers["content-type"].startswith("application/json")
    doc = as_json.json()
    assert (doc["id"], doc["items"], doc["totals"], doc["runs"]) == (
        report["id"], WS1_JAN5_ITEMS, WS1_JAN5_TOTALS, WS1_JAN5_RUNS)
    assert (await client.get(f"/v1/reports/{report['id']}/content?format=json", headers=admin)).json() == doc

    as_csv = await client.get(f"/v1/reports/{report['id']}/content", params={"format": "csv"}, headers=admin)
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text, newline="")))
    assert [r["amount"] for r in rows if r["record"] == "usage"] == [i["amount"] for i in WS1_JAN5_ITEMS]
    assert [r["amount"] for r in rows if r["record"] == "total"] == ["0.500028"]
    assert {r["run_status"]: int(r["runs"]) for r in rows if r["record"] == "runs"} == WS1_JAN5_RUNS

    bad = await client.get(f"/v1/reports/{report['id']}/content", params={"format": "xml"}, headers=admin)
    assert bad.status_code == 422
    one = await client.get(f"/v1/reports/{report['id']}", headers=admin)
    assert one.status_code == 200 and one.json() == report


async def test_workspace_bound_token_sees_only_its_workspace(client, admin, make_token, reports):
    ws2 = await make_token("usage:read", workspace_id="ws_2")
    mine = await listing(client, ws2)
    assert [(r["workspace_id"], r["day"]) for r in mine["items"]] == [("ws_2", "2026-01-05")]
    assert (await listing(client, ws2, workspace_id="ws_2"))["items"] == mine["items"]
    foreign = await client.get("/v1/reports", params={"workspace_id": "ws_1"}, headers=ws2)
    assert foreign.status_code == 404
    assert foreign.headers["content-type"].startswith("application/problem+json")

    ws1_ids = [r["id"] for r in (await listing(client, admin, workspace_id="ws_1"))["items"]]
    for report_id in ws1_ids:
        for path in (f"/v1/reports/{report_id}", f"/v1/reports/{report_id}/content",
                     f"/v1/reports/{report_id}/content?format=csv"):
            resp = await client.get(path, headers=ws2)
            assert resp.status_code == 404, path
    own = mine["items"][0]["id"]
    assert (await client.get(f"/v1/reports/{own}/content?format=csv", headers=ws2)).status_code == 200


async def test_unknown_id_scope_and_auth(client, admin, make_token, reports):
    assert (await client.get("/v1/reports/rep_000000000000000000000000/content", headers=admin)).status_code == 404
    assert (await client.get("/v1/reports/rep_nope", headers=admin)).status_code == 404
    events_only = await make_token("events:write")
    assert (await client.get("/v1/reports", headers=events_only)).status_code == 403
    assert (await client.get("/v1/reports")).status_code == 401


async def test_missing_file_is_404_not_500(client, admin, reports, settings):
    from pathlib import Path

    (report,) = (await listing(client, admin, workspace_id="ws_2"))["items"]
    (Path(settings.reports_dir) / "ws_2/2026-01-05.csv").unlink()
    resp = await client.get(f"/v1/reports/{report['id']}/content?format=csv", headers=admin)
    assert resp.status_code == 404
