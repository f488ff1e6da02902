"""Usage through HTTP, against hand-computed amounts."""

import pytest

from tests.factories import BATCH, event


@pytest.fixture
async def auth(make_token):
    return await make_token("events:write", "usage:read")


async def post(client, auth, events):
    resp = await client.post("/v1/events", json=events, headers={**auth, **BATCH})
    assert resp.status_code == 202, resp.text
    return resp.json()


async def usage(client, auth, ws="ws_1", **params):
    resp = await client.get(f"/v1/workspaces/{ws}/usage", params=params, headers=auth)
    assert resp.status_code == 200, resp.text
    return resp.json()


JAN = {"start": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00Z"}


async def test_giga_mini_extension_is_0_025(client, auth):
    await post(client, auth, [event("sandbox.extended", "2026-01-05T10:00:00Z", minutes=15)])
    body = await usage(client, auth, **JAN)
    assert body["items"] == [{
        "template": "giga-mini", "running_seconds": "0.000000", "running_amount": "0.000000",
        "extensions": 1, "extension_amount": "0.025000", "amount": "0.025000",
    }]
    assert body["total"] == "0.025000"
    assert body["currency"] == "USD" and body["workspace_id"] == "ws_1"


async def test_running_and_extensions_exact(client, auth):
    await post(client, auth, [
        event("sandbox.provisioning", "2026-01-05T09:59:00Z", template="giga-standard"),
        event("sandbox.running", "2026-01-05T10:00:00Z", template="giga-standard"),
        event("sandbox.extended", "2026-01-05T10:15:00Z", template="giga-standard", minutes=30),
        event("sandbox.stopped", "2026-01-05T11:30:00Z"),
    ])
    body = await usage(client, auth, **JAN)
    assert body["items"] == [{
        "template": "giga-standard", "running_seconds": "5400.000000", "running_amount": "0.300000",
        "extensions": 2, "extension_amount": "0.100000", "amount": "0.400000",
    }]
    assert body["total"] == "0.400000"


async def test_across_midnight_and_month_end_by_window(client, auth):
    # giga-pro ($0.40/h) from Jan 31 23:00 to Feb 1 01:30: 1 h in January, 1.5 h in February.
    await post(client, auth, [
        event("sandbox.running", "2026-01-31T23:00:00Z", template="giga-pro"),
        event("sandbox.stopped", "2026-02-01T01:30:00Z"),
    ])
    body = await usage(client, auth, start="2026-01-31T00:00:00Z", end="2026-02-02T00:00:00Z", window="day")
    assert [(i["window_start"], i["running_seconds"], i["amount"]) for i in body["items"]] == [
        ("2026-01-31T00:00:00Z", "3600.000000", "0.400000"),
        ("2026-02-01T00:00:00Z", "5400.000000", "0.600000"),
    ]
    jan = await usage(client, auth, **JAN)
    assert jan["total"] == "0.400000"
    months = await usage(client, auth, start="2026-01-01T00:00:00Z", end="2026-03-01T00:00:00Z", window="month")
    assert [i["amount"] for i in months["items"]] == ["0.400000", "0.600000"]
    hours = await usage(client, auth, start="2026-02-01T00:00:00Z", end="2026-02-01T02:00:00Z", window="hour")
    assert [(i["window_start"], i["running_seconds"]) for i in hours["items"]] == [
        ("2026-02-01T00:00:00Z", "3600.000000"), ("2026-02-01T01:00:00Z", "1800.000000")]


async def test_price_change_inside_an_interval_is_piecewise(client, auth):
    # giga-mini: $0.10/h until 2026-03-01T12:00Z, then $0.13/h. 11:00 -> 13:00 = 0.10 + 0.13.
    await post(client, auth, [
        event("sandbox.running", "2026-03-01T11:00:00Z"),
        event("sandbox.extended", "2026-03-01T11:59:59Z", minutes=15),
        event("sandbox.extended", "2026-03-01T12:00:00Z", minutes=15),
        event("sandbox.stopped", "2026-03-01T13:00:00Z"),
    ])
    body = await usage(client, auth, start="2026-03-01T00:00:00Z", end="2026-04-01T00:00:00Z")
    item = body["items"][0]
    assert item["running_seconds"] == "7200.000000"
    assert item["running_amount"] == "0.230000"
    assert item["extension_amount"] == "0.055000"  # 0.025 before the change, 0.03 at it
    assert body["total"] == "0.285000"


async def test_events_after_terminated_bill_nothing(client, auth):
    await post(client, auth, [
        event("sandbox.running", "2026-01-05T10:00:00Z"),
        event("sandbox.terminated", "2026-01-05T11:00:00Z"),
    ])
    # Late arrivals after the end: stored, accepted, not billed.
    late = [
        event("sandbox.running", "2026-01-05T12:00:00Z"),
        event("sandbox.extended", "2026-01-05T12:10:00Z", minutes=15),
        event("sandbox.stopped", "2026-01-05T13:00:00Z"),
    ]
    assert (await post(client, auth, late))["accepted"] == 3
    body = await usage(client, auth, **JAN)
    assert body["total"] == "0.100000"
    assert body["items"][0]["extensions"] == 0


async def test_arrival_order_does_not_matter(client, auth):
    events = [
        event("sandbox.running", "2026-01-05T10:00:00Z", template="giga-max"),
        event("sandbox.running", "2026-01-05T10:30:00Z", template="giga-mini"),  # already running: no-op
        event("sandbox.stopped", "2026-01-05T11:00:00Z"),
        event("sandbox.stopped", "2026-01-05T11:10:00Z"),  # not running: no-op
    ]
    for ev in reversed(events):
        await post(client, auth, [ev])
    body = await usage(client, auth, **JAN)
    assert body["items"] == [{
        "template": "giga-max", "running_seconds": "3600.000000", "running_amount": "0.800000",
        "extensions": 0, "extension_amount": "0.000000", "amount": "0.800000"}]


async def test_open_interval_accrues_to_as_of(client, auth):
    await post(client, auth, [event("sandbox.running", "2026-01-05T10:00:00Z")])
    body = await usage(client, auth, **JAN, as_of="2026-01-05T10:45:00Z")
    assert body["items"][0]["running_seconds"] == "2700.000000"
    assert body["items"][0]["running_amount"] == "0.075000"
    assert body["as_of"] == "2026-01-05T10:45:00Z"
    # Without as_of it runs until now, cut at the query's end.
    body = await usage(client, auth, **JAN)
    assert body["items"][0]["running_seconds"] == f"{(26 * 24 + 14) * 3600}.000000"


async def test_rounding_half_even_once(client, auth):
    # giga-mini for 9 seconds = 0.00025 exactly -> rounds to 0.000250; 1 s = 0.0000277..
    await post(client, auth, [
        event("sandbox.running", "2026-01-05T10:00:00Z", sandbox_id="a"),
        event("sandbox.stopped", "2026-01-05T10:00:01Z", sandbox_id="a"),
        event("sandbox.running", "2026-01-05T10:00:00Z", sandbox_id="b"),
        event("sandbox.stopped", "2026-01-05T10:00:01Z", sandbox_id="b"),
        event("sandbox.running", "2026-01-05T10:00:00Z", sandbox_id="c"),
        event("sandbox.stopped", "2026-01-05T10:00:01Z", sandbox_id="c"),
    ])
    body = await usage(client, auth, **JAN, group_by="sandbox")
    # Each second costs 0.1/3600 = 0.0000277.. -> 0.000028; three of them are 0.0000833.. -> 0.000083.
    assert [i["amount"] for i in body["items"]] == ["0.000028"] * 3
    assert body["total"] == "0.000083"


async def test_group_by_combinations(client, auth):
    await post(client, auth, [
        event("sandbox.running", "2026-01-05T10:00:00Z", deployment_id="d1", sandbox_id="s1"),
        event("sandbox.stopped", "2026-01-05T11:00:00Z", deployment_id="d1", sandbox_id="s1"),
        event("sandbox.running", "2026-01-05T10:00:00Z", deployment_id="d2", sandbox_id="s2", template="giga-pro"),
        event("sandbox.stopped", "2026-01-05T10:30:00Z", deployment_id="d2", sandbox_id="s2"),
    ])
    body = await usage(client, auth, **JAN, group_by="deployment,template,sandbox")
    assert [(i["deployment_id"], i["template"], i["sandbox_id"], i["amount"]) for i in body["items"]] == [
        ("d1", "giga-mini", "s1", "0.100000"), ("d2", "giga-pro", "s2", "0.200000")]
    body = await usage(client, auth, **JAN, group_by="deployment")
    assert [set(i) - {"running_seconds", "running_amount", "extensions", "extension_amount", "amount"}
            for i in body["items"]] == [{"deployment_id"}, {"deployment_id"}]


async def test_empty_workspace_is_zero_not_404(client, auth):
    body = await usage(client, auth, ws="ws_empty", **JAN)
    assert body["items"] == [] and body["total"] == "0.000000"


async def test_bound_token_sees_only_its_workspace(client, make_token):
    mine = await make_token("usage:read", workspace_id="ws_1")
    assert (await client.get("/v1/workspaces/ws_1/usage", params=JAN, headers=mine)).status_code == 200
    resp = await client.get("/v1/workspaces/ws_2/usage", params=JAN, headers=mine)
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(("params", "field"), [
    ({"end": "2026-02-01T00:00:00Z"}, "start"),
    ({"start": "2026-01-01T00:00:00Z"}, "end"),
    ({**JAN, "start": "yesterday"}, "start"),
    ({"start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end"),
    ({**JAN, "group_by": "template,color"}, "group_by"),
    ({**JAN, "window": "week"}, "window"),
    ({**JAN, "as_of": "soon"}, "as_of"),
])
async def test_bad_queries_are_422(client, auth, params, field):
    resp = await client.get("/v1/workspaces/ws_1/usage", params=params, headers=auth)
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == field
