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
