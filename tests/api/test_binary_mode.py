"""CloudEvents binary content mode over HTTP, sent with the CloudEvents SDK: the same rules, the
same answers and the same fast path as structured mode (events.binary)."""

from datetime import datetime, timezone

import pytest
from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from metering.api.fast_ingest import FastIngest

FMT = JSONFormat()
WHEN = datetime(2026, 1, 1, 10, tzinfo=timezone.utc)


def sdk_event(id_: str, type_: str = "sandbox.running", **data) -> CloudEvent:
    data = {"workspace_id": "ws_bin", "deployment_id": "dep_1", "sandbox_id": "sb_1", "template": "giga-mini", **data}
    return CloudEvent(
        attributes={"id": id_, "type": type_, "source": "/platform/sandboxes", "time": WHEN,
                    "subject": data["sandbox_id"], "datacontenttype": "application/json", "region": "eu 1%"},
        data=data,
    )


@pytest.fixture
def served_by_route(client):
    """How many requests the fast path handed to the Litestar route (it answers only errors)."""
    fast = client.app.asgi_handler.inner  # behind the body gate (metering.api.bodies)
    assert isinstance(fast, FastIngest)
    calls = []
    fallback = fast.fallback

    async def counting(scope, receive, send):
        calls.append(scope["path"])
        await fallback(scope, receive, send)

    fast.fallback = counting
    return calls


async def post(client, message, admin):
    return await client.post("/v1/events", content=message.body, headers={**message.headers, **admin})


async def test_binary_and_structured_events_are_the_same_event(client, admin, served_by_route):
    binary = to_binary(sdk_event("evt-b1"), FMT)
    assert binary.headers["ce-specversion"] == "1.0" and binary.headers["content-type"] == "application/json"
    resp = await post(client, binary, admin)
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"accepted": 1, "duplicates": 0}
    assert "/v1/events" not in served_by_route  # answered by the fast path
    # Its structured twin (and the binary message again) are duplicates, not conflicts.
    assert (await post(client, to_structured(sdk_event("evt-b1"), FMT), admin)).json() == {"accepted": 0, "duplicates": 1}
    assert (await post(client, binary, admin)).json() == {"accepted": 0, "duplicates": 1}
    # A structured event first, then the same one in binary mode: a duplicate too.
    assert (await post(client, to_structured(sdk_event("evt-b2"), FMT), admin)).json()["accepted"] == 1
    assert (await post(client, to_binary(sdk_event("evt-b2"), FMT), admin)).json() == {"accepted": 0, "duplicates": 1}
    # The same key with another body is a 409 in either mode.
    other = to_binary(sdk_event("evt-b1", sandbox_id="sb_2"), FMT)
    assert (await post(client, other, admin)).status_code == 409
    # The extension attribute (percent-encoded in its header) is kept as sent.
    usage = await client.get("/v1/workspaces/ws_bin/usage", headers=admin, params={
        "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "as_of": "2026-01-01T11:00:00Z"})
    assert usage.json()["total"] == "0.100000"  # one hour of giga-mini, billed once


@pytest.mark.parametrize("change, field", [
    (lambda e: e.pop("ce-time"), "time"),
    (lambda e: e.pop("ce-id"), "id"),
    (lambda e: e.update({"ce-type": "sandbox.exploded"}), "type"),
    (lambda e: e.update({"ce-specversion": "0.3"}), "specversion"),
    (lambda e: e.update({"ce-subject": "sb_other"}), "subject"),
    (lambda e: e.update({"ce-time": "2026-01-01T10:00:00"}), "time"),
])
async def test_invalid_binary_events_get_the_structured_answer(client, admin, change, field):
    binary = to_binary(sdk_event("evt-bad"), FMT)
    headers = dict(binary.headers)
    change(headers)
    resp = await client.post("/v1/events", content=binary.body, headers={**headers, **admin})
    assert resp.status_code == 422, resp.text
    assert resp.json()["errors"][0]["index"] == 0 and resp.json()["errors"][0]["field"] == field
    # The structured event carrying the same attributes gets the same answer.
    attributes = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
    structured = {**attributes, "datacontenttype": "application/json", "data": sdk_event("x").get_data()}
    twin = await client.post("/v1/events", json=structured,
                             headers={**admin, "Content-Type": "application/cloudevents+json"})
    assert twin.status_code == 422 and twin.json()["errors"] == resp.json()["errors"]


async def test_binary_data_must_be_json_and_an_object(client, admin):
    headers = dict(to_binary(sdk_event("evt-x"), FMT).headers)
    resp = await client.post("/v1/events", content=b'{"workspace_id": "ws_bin"}, "id": "evil"', headers={**headers, **admin})
    assert resp.status_code == 400 and "data" in resp.json()["detail"]
    resp = await client.post("/v1/events", content=b"[1, 2]", headers={**headers, **admin})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "data"
    resp = await client.post("/v1/events", content=b"", headers={**headers, **admin})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "data"
    # Binary mode is application/json only; another data type is a 415.
    resp = await client.post("/v1/events", content=b"<a/>", headers={**headers, **admin, "content-type": "text/xml"})
    assert resp.status_code == 415


async def test_binary_mode_needs_the_token_like_structured_mode(client, make_token, served_by_route):
    reader = await make_token("usage:read")
    binary = to_binary(sdk_event("evt-auth"), FMT)
    assert (await client.post("/v1/events", content=binary.body, headers=binary.headers)).status_code == 401
    assert (await post(client, binary, reader)).status_code == 403
    bound = await make_token("events:write", workspace_id="ws_other")
    resp = await post(client, binary, bound)
    assert resp.status_code == 403 and resp.json()["errors"][0]["field"] == "data.workspace_id"
    assert served_by_route.count("/v1/events") == 3
