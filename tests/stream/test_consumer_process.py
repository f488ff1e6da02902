"""``metering consume`` as real processes against the real NATS server: kill -9 in the middle of a
50,000-event stream loses nothing and bills nothing twice; two instances share one consumer."""

import os
import random
import subprocess
import sys
import time

import msgspec
import pytest
from sqlalchemy import text

from metering.core.money import format_money, round_micro
from tests.reliability.test_crash import lifecycles, oracle
from tests.process import ROOT
from tests.stream.nats_helpers import drop, ensure_stream, env_for, pending, publish, unique_config, wait_for

pytestmark = pytest.mark.slow


class ConsumerProcess:
    def __init__(self, env: dict[str, str], log_path) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "ConsumerProcess":
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "metering.cli", "consume"], cwd=ROOT, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
async def stream_cfg():
    cfg = unique_config(batch_size=1000, ack_wait_seconds=10)  # what a killed process held comes back soon
    await ensure_stream(cfg)
    yield cfg
    await drop(cfg)


def consumer_env(db_url: str, cfg) -> dict[str, str]:
    return {"METERING_DATABASE_URL": db_url, "METERING_LOG_LEVEL": "DEBUG", **env_for(cfg)}


async def count(db) -> int:
    async with db.read() as session:
        return (await session.execute(text("SELECT count(*) FROM events"))).scalar_one()


async def test_kill_minus_9_mid_stream_loses_nothing_and_bills_nothing_twice(db_url, db, client, admin,
                                                                              stream_cfg, tmp_path):
    events = lifecycles(random.Random(19), workspaces=50, sandboxes=100, per_sandbox=10)
    assert len(events) == 50_000
    await publish(stream_cfg, [(msgspec.json.encode(ev), None) for ev in events])
    consumer = ConsumerProcess(consumer_env(db_url, stream_cfg), tmp_path / "consume.log").start()
    try:
        for at_least in (8_000, 25_000):  # kill -9 twice, mid-stream, and start again
            await wait_for(lambda: _count_over(db, at_least), 120, f"{at_least} events stored")
            consumer.kill()
            assert await count(db) < len(events)
            consumer.start()
        await wait_for(lambda: _drained(stream_cfg), 180, "every message acknowledged")
    finally:
        consumer.stop()
    async with db.read() as session:
        stored = dict((await session.execute(text("SELECT event_id, count(*) FROM events GROUP BY event_id"))).all())
    assert sorted(stored) == sorted(ev["id"] for ev in events) and set(stored.values()) == {1}
    for ws, amount in oracle(events).items():
        resp = await client.get(f"/v1/workspaces/{ws}/usage", headers=admin, params={
            "start": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00Z", "as_of": "2026-02-01T00:00:00Z"})
        assert resp.json()["total"] == format_money(round_micro(amount)), ws


async def _count_over(db, n: int) -> bool:
    return await count(db) >= n


async def _drained(cfg) -> bool:
    return await pending(cfg) == (0, 0)


async def test_two_instances_share_the_consumer_and_store_each_event_once(db_url, db, stream_cfg, tmp_path):
    if db_url.startswith("sqlite"):
        pytest.skip("several instances share one PostgreSQL database")
    events = lifecycles(random.Random(20), workspaces=10, sandboxes=100, per_sandbox=10)
    env = consumer_env(db_url, stream_cfg)
    env["METERING_INGEST__NATS__BATCH_SIZE"] = "200"
    consumers = [ConsumerProcess(env, tmp_path / f"consume{i}.log").start() for i in range(2)]
    try:
        await publish(stream_cfg, [(msgspec.json.encode(ev), None) for ev in events])
        await wait_for(lambda: _drained(stream_cfg), 180, "every message acknowledged")
    finally:
        for consumer in consumers:
            consumer.stop()
    async with db.read() as session:
        stored = dict((await session.execute(text("SELECT event_id, count(*) FROM events GROUP BY event_id"))).all())
    assert sorted(stored) == sorted(ev["id"] for ev in events) and set(stored.values()) == {1}
    for consumer in consumers:  # each instance stored a share of the stream
        assert "stream batch stored" in consumer.log_path.read_text()
