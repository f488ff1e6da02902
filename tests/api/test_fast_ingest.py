"""POST /v1/events answers the same whichever way it is served: by the fast path when all is
well, by the Litestar route when anything is not (api.fast_ingest)."""

import re

import httpx
import msgspec
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.factories import BATCH, event
from tests.process import ServerProcess

T0 = "2026-01-01T00:00:00Z"


def counter(metrics: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else 0.0


async def test_accepted_and_refused_requests_are_answered_and_counted_once(client, admin):
    ok = await client.post("/v1/events", json=event("sandbox.running", T0),
                           headers={**admin, "X-Request-ID": "req-1"})
    assert ok.status_code == 202 and ok.json() == {"accepted": 1, "duplicates": 0}
    assert ok.headers["content-type"] == "application/json" and ok.headers["x-request-id"] == "req-1"
    bad = await client.post("/v1/events", json=[event("sandbox.running", T0, sandbox_id="bad id")],
                            headers={**admin, **BATCH, "X-Request-ID": "req-2"})
    assert bad.status_code == 422 and bad.headers["x-request-id"] == "req-2"
    assert bad.json()["errors"][0]["index"] == 0
    metrics = (await client.get("/metrics")).text
    assert counter(metrics, "metering_events_accepted_total") == 1
    assert counter(metrics, 'metering_events_rejected_total{status="422"}') == 1
    assert counter(metrics, 'metering_http_request_seconds_count{method="POST",route="/v1/events",status="202"}') == 1
    assert counter(metrics, 'metering_http_request_seconds_count{method="POST",route="/v1/events",status="422"}') == 1


@pytest.fixture
def server(db_url, db, tmp_path):
    proc = ServerProcess({"METERING_DATABASE_URL": db_url, "METERING_ADMIN_TOKEN": ADMIN_TOKEN,
                          "METERING_SCHEDULER__ENABLED": "false", "METERING_MAX_BODY_BYTES": "50000"},
                         tmp_path / "server.log").start()
    yield proc
    proc.stop()


def test_bodies_sent_in_pieces_are_read_whole_or_refused_whole(server):
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}", **BATCH}

    def pieces(body: bytes, size: int = 1000):  # chunked transfer: many ASGI body messages
        yield from (body[i:i + size] for i in range(0, len(body), size))

    batch = [event("sandbox.running", T0, sandbox_id=f"sb_{i}") for i in range(40)]
    resp = httpx.post(f"{server.url}/v1/events", content=pieces(msgspec.json.encode(batch)), headers=auth)
    assert resp.status_code == 202 and resp.json() == {"accepted": 40, "duplicates": 0}
    invalid = [*batch[:30], event("sandbox.running", T0, sandbox_id="bad id")]
    resp = httpx.post(f"{server.url}/v1/events", content=pieces(msgspec.json.encode(invalid)), headers=auth)
    assert resp.status_code == 422 and resp.json()["errors"][0]["index"] == 30
    big = [event("sandbox.running", T0, sandbox_id=f"big_{i}") for i in range(400)]  # over 50,000 bytes
    resp = httpx.post(f"{server.url}/v1/events", content=pieces(msgspec.json.encode(big)), headers=auth)
    assert resp.status_code == 413 and resp.headers["content-type"].startswith("application/problem+json")
    metrics = httpx.get(f"{server.url}/metrics").text
    assert counter(metrics, "metering_events_accepted_total") == 40
