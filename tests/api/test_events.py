from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from tests.factories import BATCH, SINGLE, event

T0 = "2026-01-01T00:00:00Z"


@pytest.fixture
async def writer(make_token):
    return await make_token("events:write")


async def stored_count(db) -> int:
    async with db.read() as session:
        return (await session.execute(text("SELECT count(*) FROM events"))).scalar_one()


async def test_single_event_is_accepted(client, writer, db):
    for ctype in ("application/cloudevents+json", "application/json; charset=utf-8"):
        resp = await client.post("/v1/events", json=event("sandbox.running", T0), headers={**writer, "Content-Type": ctype})
        assert resp.status_code == 202, resp.text
        assert resp.json() == {"accepted": 1, "duplicates": 0}
    assert await stored_count(db) == 2


async def test_batch_and_duplicates(client, writer, db):
    batch = [event("sandbox.running", T0), event("sandbox.stopped", "2026-01-01T01:00:00Z")]
    resp = await client.post("/v1/events", json=batch, headers={**writer, **BATCH})
    assert resp.json() == {"accepted": 2, "duplicates": 0}
    # The same batch again, and a batch repeating an event inside itself.
    resp = await client.post("/v1/events", json=batch, headers={**writer, **BATCH})
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 0, "duplicates": 2}
    again = event("sandbox.extended", T0, minutes=15)
    resp = await client.post("/v1/events", json=[again, again, batch[0]], headers={**writer, **BATCH})
    assert resp.json() == {"accepted": 1, "duplicates": 2}
    assert await stored_count(db) == 3


async def test_key_order_does_not_make_a_conflict(client, writer):
    ev = event("sandbox.running", T0)
    await client.post("/v1/events", json=ev, headers={**writer, **SINGLE})
    reordered = dict(reversed(list(ev.items())))
    resp = await client.post("/v1/events", json=reordered, headers={**writer, **SINGLE})
    assert resp.json() == {"accepted": 0, "duplicates": 1}


async def test_same_key_other_body_is_409_and_batch_is_not_stored(client, writer, db):
    first = event("sandbox.running", T0, id="evt_fixed")
    await client.post("/v1/events", json=first, headers={**writer, **SINGLE})
    changed = {**first, "time": "2026-01-01T00:00:01Z"}
    fresh = event("sandbox.stopped", "2026-01-01T02:00:00Z")
    resp = await client.post("/v1/events", json=[fresh, changed], headers={**writer, **BATCH})
    assert resp.status_code == 409
    body = resp.json()
    assert body["errors"][0]["index"] == 1
    assert body["errors"][0]["field"] == "id"
    assert await stored_count(db) == 1
    # Inside one batch too.
    resp = await client.post("/v1/events", json=[fresh, {**fresh, "subject": "sb_1"}], headers={**writer, **BATCH})
    assert resp.status_code == 409
    assert await stored_count(db) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e.pop("id"), "id"),
        (lambda e: e.pop("time"), "time"),
        (lambda e: e.pop("source"), "source"),
        (lambda e: e.update(specversion="0.3"), "specversion"),
        (lambda e: e.update(type="sandbox.exploded"), "type"),
        (lambda e: e.update(time="yesterday"), "time"),
        (lambda e: e.update(time="2026-01-01T00:00:00"), "time"),
        (lambda e: e["data"].pop("workspace_id"), "data.workspace_id"),
        (lambda e: e["data"].pop("sandbox_id"), "data.sandbox_id"),
        (lambda e: e["data"].update(template="giga-ultra"), "data.template"),
        (lambda e: e["data"].pop("template"), "data.template"),
        (lambda e: e["data"].update(sandbox_id="has space"), "data.sandbox_id"),
        (lambda e: e["data"].update(sandbox_id="x" * 129), "data.sandbox_id"),
        (lambda e: e.update(id=""), "id"),
        (lambda e: e.update(subject="sb_other"), "subject"),
        (lambda e: e.pop("data"), "data"),
    ],
)
async def test_each_rule_is_422_naming_index_and_field(client, writer, db, change, field):
    bad = event("sandbox.running", T0)
    change(bad)
    resp = await client.post("/v1/events", json=[event("sandbox.running", T0), bad], headers={**writer, **BATCH})
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    errors = resp.json()["errors"]
    assert {"index": 1, "field": field} in [{"index": e.get("index"), "field": e.get("field")} for e in errors]
    assert await stored_count(db) == 0


@pytest.mark.parametrize("minutes", [0, -15, 10, 16, "15", True, 1.5])
async def test_minutes_must_be_positive_multiple_of_15(client, writer, minutes):
    bad = event("sandbox.extended", T0, minutes=15)
    bad["data"]["minutes"] = minutes
    resp = await client.post("/v1/events", json=bad, headers={**writer, **SINGLE})
    assert resp.status_code == 422
    assert resp.json()["errors"][0] == {"index": 0, "field": "data.minutes", "message": resp.json()["errors"][0]["message"]}


async def test_run_events_need_run_id_not_template(client, writer):
    ok = event("run.completed", T0, run_id="run_1", template=None)
    assert (await client.post("/v1/events", json=ok, headers={**writer, **SINGLE})).status_code == 202
    bad = event("run.completed", T0, template=None)
    resp = await client.post("/v1/events", json=bad, headers={**writer, **SINGLE})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "data.run_id"


async def test_time_in_the_future(client, writer):
    now = datetime.now(timezone.utc)
    soon = (now + timedelta(minutes=4)).isoformat()
    late = (now + timedelta(minutes=6)).isoformat()
    assert (await client.post("/v1/events", json=event("sandbox.running", soon), headers={**writer, **SINGLE})).status_code == 202
    resp = await client.post("/v1/events", json=event("sandbox.running", late), headers={**writer, **SINGLE})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "time"


async def test_other_content_types_are_415(client, writer):
    for ctype in ("text/plain", "application/xml", ""):
        resp = await client.post("/v1/events", content=b"{}", headers={**writer, "Content-Type": ctype})
        assert resp.status_code == 415
        assert resp.headers["content-type"].startswith("application/problem+json")


async def test_malformed_json_is_400(client, writer):
    resp = await client.post("/v1/events", content=b"{nope", headers={**writer, **SINGLE})
    assert resp.status_code == 400
    resp = await client.post("/v1/events", json={"not": "a list"}, headers={**writer, **BATCH})
    assert resp.status_code == 400
    resp = await client.post("/v1/events", json=[1, "x"], headers={**writer, **BATCH})
    assert resp.status_code == 422
    assert [e["index"] for e in resp.json()["errors"]] == [0, 1]


async def test_too_many_events_is_413(client, writer, db):
    batch = [event("sandbox.extended", T0, minutes=15) for _ in range(10_001)]
    resp = await client.post("/v1/events", json=batch, headers={**writer, **BATCH})
    assert resp.status_code == 413
    assert await stored_count(db) == 0


async def test_ten_thousand_events_fit(client, writer, db):
    batch = [event("sandbox.extended", T0, minutes=15, sandbox_id=f"sb_{i % 50}") for i in range(10_000)]
    resp = await client.post("/v1/events", json=batch, headers={**writer, **BATCH})
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 10_000, "duplicates": 0}
    assert await stored_count(db) == 10_000


async def test_big_batches_are_parsed_off_the_event_loop(client, writer, db, monkeypatch):
    """Parsing 10,000 events takes tens of milliseconds, in which the event loop would answer
    nobody: a big batch is parsed on a thread, a single event right away on the loop."""
    import asyncio

    from metering.events import controller

    on_the_loop = []

    def parse_events(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            on_the_loop.append(True)
        except RuntimeError:  # no event loop runs in this thread
            on_the_loop.append(False)
        return real(*args, **kwargs)

    real = controller.parse_events
    monkeypatch.setattr(controller, "parse_events", parse_events)
    batch = [event("sandbox.extended", T0, minutes=15, sandbox_id=f"sb_{i % 50}") for i in range(2_000)]
    batch[1_500]["data"]["minutes"] = 7  # not a multiple of 15
    resp = await client.post("/v1/events", json=batch, headers={**writer, **BATCH})
    assert resp.status_code == 422 and [e["index"] for e in resp.json()["errors"]] == [1_500]
    batch[1_500]["data"]["minutes"] = 15
    resp = await client.post("/v1/events", json=batch, headers={**writer, **BATCH})
    assert resp.status_code == 202 and resp.json() == {"accepted": 2_000, "duplicates": 0}
    resp = await client.post("/v1/events", json=event("sandbox.running", T0), headers={**writer, **SINGLE})
    assert resp.status_code == 202
    assert on_the_loop[-1] is True and not any(on_the_loop[:-1]), on_the_loop
    assert await stored_count(db) == 2_001


async def test_body_over_limit_is_413(settings, db, make_token):
    from litestar.testing import AsyncTestClient

    from metering.api.app import create_app

    small = type(settings)(**{**{f: getattr(settings, f) for f in settings.__struct_fields__}, "max_body_bytes": 2000})
    async with AsyncTestClient(app=create_app(small)) as small_client:
        from tests.conftest import ADMIN_TOKEN

        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        batch = [event("sandbox.running", T0) for _ in range(20)]
        resp = await small_client.post("/v1/events", json=batch, headers={**auth, **BATCH})
        assert resp.status_code == 413
        assert resp.headers["content-type"].startswith("application/problem+json")
