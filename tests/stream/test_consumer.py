"""The JetStream consumer against the real NATS server: structured and binary messages, duplicates,
dead letters, and a poison message that blocks nothing (metering.stream)."""

import asyncio

import msgspec
import pytest
from sqlalchemy import text

from metering.api.metrics import Metrics
from metering.pricing.service import PriceCatalog
from metering.stream.consumer import StreamConsumer, ingest_state
from tests.factories import event
from tests.stream.nats_helpers import dead_letters, drop, ensure_stream, pending, publish, unique_config, wait_for

T0 = "2026-01-01T10:00:00Z"


@pytest.fixture
async def stream_cfg():
    cfg = unique_config(batch_size=100, fetch_wait_seconds=0.2)
    await ensure_stream(cfg)
    yield cfg
    await drop(cfg)


@pytest.fixture
async def consumer(settings, db, stream_cfg):
    prices = PriceCatalog.from_file(settings.pricing_file)
    await prices.refresh(db)
    stop = asyncio.Event()
    task = asyncio.create_task(StreamConsumer(ingest_state(settings, db, prices, Metrics()), stream_cfg).run(stop))
    yield
    stop.set()
    await asyncio.wait_for(task, 30)


def structured(ev: dict) -> tuple[bytes, dict | None]:
    return msgspec.json.encode(ev), None


def binary(ev: dict) -> tuple[bytes, dict]:
    headers = {f"ce-{k}": str(v) for k, v in ev.items() if k != "data"}
    return msgspec.json.encode(ev["data"]), {**headers, "content-type": "application/json"}


async def drained(cfg) -> bool:
    return await pending(cfg) == (0, 0)


async def stored(db) -> dict[str, int]:
    async with db.read() as session:
        rows = (await session.execute(text("SELECT event_id, count(*) FROM events GROUP BY event_id"))).all()
    return dict(rows)


async def test_structured_binary_duplicates_and_dead_letters(consumer, stream_cfg, db):
    # As a binary message carries its Content-Type as datacontenttype, the twins say it too.
    running = event("sandbox.running", T0, id="e-run", workspace_id="ws_s", datacontenttype="application/json")
    stopped = event("sandbox.stopped", "2026-01-01T12:00:00Z", id="e-stop", workspace_id="ws_s")
    extended = event("sandbox.extended", "2026-01-01T10:30:00Z", id="e-ext", workspace_id="ws_s", minutes=30)
    conflicting = {**running, "data": {**running["data"], "template": "giga-pro"}}
    messages = [
        structured(running),
        (msgspec.json.encode(extended), {"content-type": "application/cloudevents+json"}),
        binary(stopped),
        binary(running),  # the binary twin of a stored event: a duplicate
        (b"{not json", None),
        structured(event("sandbox.exploded", T0, id="e-bad")),
        binary(conflicting),  # the same key, another body
        structured(event("sandbox.running", T0, id="e-after", workspace_id="ws_s", sandbox_id="sb_2")),
    ]
    await publish(stream_cfg, messages)
    await wait_for(lambda: drained(stream_cfg), 60, "every message acknowledged")
    assert await stored(db) == {"e-run": 1, "e-stop": 1, "e-ext": 1, "e-after": 1}

    dead = await dead_letters(stream_cfg)
    assert [body for body, _ in dead] == [messages[4][0], messages[5][0], messages[6][0]]
    problems = [msgspec.json.decode(headers["Metering-Problem"]) for _, headers in dead]
    assert [p["status"] for p in problems] == [400, 422, 409]
    assert problems[1]["errors"] == [{"index": 0, "field": "type", "message": "unknown event type 'sandbox.exploded'"}]
    assert problems[2]["errors"][0]["field"] == "id"
    assert dead[2][1]["ce-id"] == "e-run"  # a binary event's attributes come along
    assert all(h["Metering-Subject"].startswith(stream_cfg.subjects[0][:-1]) for _, h in dead)


async def test_a_poison_message_does_not_block_the_stream(consumer, stream_cfg, db):
    valid = [event("run.queued", T0, id=f"q{i}", run_id=f"r{i}") for i in range(450)]
    messages = [structured(ev) for ev in valid]
    # Poison in the middle of fetches, at a fetch's first place, and at its end.
    for at in (0, 99, 250):
        messages.insert(at, (b'{"specversion": "1.0"}', None))
    await publish(stream_cfg, messages)
    await wait_for(lambda: drained(stream_cfg), 60, "every message acknowledged")
    assert await stored(db) == {f"q{i}": 1 for i in range(450)}
    assert len(await dead_letters(stream_cfg)) == 3


async def test_a_message_nested_too_deep_is_a_dead_letter(consumer, stream_cfg, db):
    """CONTRACT 1: deeper than 64 levels is 400 on every way in; the consumer lives on."""
    deep_array = b'{"specversion": "1.0", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    deep_object = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    after = event("run.queued", T0, id="q-after", run_id="r-after")
    await publish(stream_cfg, [(deep_array, None), (deep_object, None), structured(after)])
    await wait_for(lambda: drained(stream_cfg), 60, "every message acknowledged")
    assert await stored(db) == {"q-after": 1}
    dead = await dead_letters(stream_cfg)
    assert [msgspec.json.decode(h["Metering-Problem"])["status"] for _, h in dead] == [400, 400]
