"""Hypothesis fuzz of CloudEvents decoding and validation, through the HTTP endpoint.

Whatever arrives, the answer is a 202 or a 4xx problem-details body, never a 5xx, and a
refused batch stores nothing.
"""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.factories import event

TYPES = ["sandbox.provisioning", "sandbox.running", "sandbox.extended", "sandbox.stopped", "sandbox.terminated",
         "run.queued", "run.completed", "bogus", ""]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=False),
                    st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@st.composite
def mutated_event(draw):
    ev = event(draw(st.sampled_from(TYPES)), draw(st.sampled_from(
        ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00+02:00", "2026-01-01", "not a time", "2099-01-01T00:00:00Z"])),
        minutes=draw(st.sampled_from([None, 15, 0, -15, 7])), run_id=draw(st.sampled_from([None, "run_1"])),
        id=draw(st.sampled_from([None, "ok-id", "bad id", "x" * 200])))
    for _ in range(draw(st.integers(0, 3))):
        data = ev.get("data")
        target = data if isinstance(data, dict) and draw(st.booleans()) else ev
        key = draw(st.sampled_from(list(target) + ["extra", "minutes", "template", "subject"]))
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(json_values)
    return ev


bodies = st.one_of(
    st.lists(mutated_event(), max_size=5).map(json.dumps),
    mutated_event().map(json.dumps),
    json_values.map(json.dumps),
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, content_type=st.sampled_from(
    ["application/cloudevents-batch+json", "application/cloudevents+json", "application/json", "text/plain"]))
async def test_no_input_makes_a_5xx(client, admin, db, body, content_type):
    async with db.read() as session:
        before = (await session.execute(text("SELECT count(*) FROM events"))).scalar_one()
    resp = await client.post("/v1/events", content=body.encode(),
                             headers={**admin, "Content-Type": content_type})
    assert resp.status_code in (202, 400, 409, 413, 415, 422), resp.text
    async with db.read() as session:
        after = (await session.execute(text("SELECT count(*) FROM events"))).scalar_one()
    if resp.status_code == 202:
        assert after - before == resp.json()["accepted"]
    else:
        assert resp.headers["content-type"].startswith("application/problem+json")
        problem = resp.json()
        assert problem["status"] == resp.status_code and problem["title"] and "errors" in problem
        assert after == before


@pytest.mark.parametrize("body", [b"", b"\xff\xfe", b"[" * 10000, b'{"a":' * 5000 + b"1" + b"}" * 5000])
async def test_pathological_bodies(client, admin, body):
    resp = await client.post("/v1/events", content=body,
                             headers={**admin, "Content-Type": "application/cloudevents-batch+json"})
    assert resp.status_code in (400, 422)


# Every other endpoint: its query parameters and its JSON body, fuzzed the same way.
QUERIES = {
    "/v1/workspaces/ws_1/usage": ["start", "end", "group_by", "window", "as_of"],
    "/v1/invoices": ["workspace_id", "status", "period_start", "limit", "cursor"],
    "/v1/settlements": ["workspace_id", "status", "payer", "invoice_id", "limit", "cursor"],
    "/v1/reports": ["workspace_id", "kind", "start", "end", "limit", "cursor"],
    "/v1/exports/usage": ["start", "end", "workspace_id", "format"],
    "/v1/prices": ["at"],
}
param_values = st.one_of(
    st.text(max_size=40), st.integers(-10**30, 10**30).map(str),
    st.sampled_from(["2026-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
                     "0001-01-01T00:00:00+23:59", "2026-02-30T00:00:00Z", "hour", "month", "template,sandbox", "0",
                     "501", "-1", "eyJ4IjoxfQ", "0x" + "a" * 40, "x" * 129]),
)
BODIES = {
    "/v1/tokens": {"name": "n", "scopes": ["usage:read"], "workspace_id": "ws_1"},
    "/v1/billing-runs": {"period_start": "2026-01-01T00:00:00Z", "period_end": "2026-02-01T00:00:00Z"},
    "/v1/prices": {"effective_from": "2030-01-01T00:00:00Z", "prices": {"giga-mini": {"hourly": "1", "extension": "1"}}},
    "/v1/settlements": {"network": "eip155:8453", "transaction": "0x" + "1" * 64, "purpose": {"kind": "run"}},
}


@st.composite
def mutated_body(draw, base):  # type: ignore[no-untyped-def]
    body = dict(base)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from([*body, "extra"]))
        if draw(st.booleans()):
            body.pop(key, None)
        else:
            body[key] = draw(json_values)
    return body


def assert_clean(resp) -> None:  # type: ignore[no-untyped-def]
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.json()["status"] == resp.status_code


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), path=st.sampled_from(sorted(QUERIES)))
async def test_no_query_parameter_makes_a_5xx(client, admin, data, path):
    names = data.draw(st.lists(st.sampled_from(QUERIES[path]), unique=True, max_size=len(QUERIES[path])))
    params = {name: data.draw(param_values) for name in names}
    assert_clean(await client.get(path, params=params, headers=admin))


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), path=st.sampled_from(sorted(BODIES)))
async def test_no_json_body_makes_a_5xx(client, admin, data, path):
    body = data.draw(st.one_of(mutated_body(BODIES[path]), json_values))
    assert_clean(await client.post(path, content=json.dumps(body).encode(),
                                   headers={**admin, "Content-Type": "application/json"}))
