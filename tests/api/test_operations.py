import asyncio
import re
import sqlite3

import msgspec
from sqlalchemy import text

from metering.db import create_database
from metering.db.engine import SQLITE_PAGE_SIZE
from metering.events.service import parse_events, store_batch
from metering.migrate import upgrade
from tests.factories import event


async def test_health(client):
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"


async def test_openapi_schema_lists_the_endpoints(client):
    schema = (await client.get("/schema/openapi.json")).json()
    assert {"/v1/events", "/v1/tokens", "/health/ready", "/metrics"} <= set(schema["paths"])


async def test_request_id_is_echoed_or_made(client):
    resp = await client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"
    made = {(await client.get("/health/live")).headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in made)


async def test_unknown_route_is_problem_details(client):
    resp = await client.get("/v1/nothing-here")
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert set(resp.json()) >= {"type", "title", "status", "detail", "errors"}


async def test_metrics_exposes_ingest_counters(client):
    body = (await client.get("/metrics")).text
    assert "metering_events_accepted_total" in body
    assert "metering_events_rejected_total" in body


async def test_sqlite_is_durable_wal_full(db, engine_name):
    if engine_name != "sqlite":
        return
    async with db.read() as session:
        assert (await session.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await session.execute(text("PRAGMA synchronous"))).scalar() == 2  # FULL


async def test_a_nul_character_in_the_url_is_a_400_on_every_engine(client, admin):
    for url in ("/v1/settlements?payer=a%00b", "/v1/settlements/set%00x", "/v1/invoices?workspace_id=%00"):
        resp = await client.get(url, headers=admin)
        assert resp.status_code == 400, (url, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.json()["detail"] == "the URL holds a NUL character (%00)"
        assert resp.headers["x-request-id"]


async def test_request_metrics_are_labelled_by_declared_route(client, admin):
    for settlement in ("set_a", "set_b"):
        assert (await client.get(f"/v1/settlements/{settlement}", headers=admin)).status_code == 404
    metrics = (await client.get("/metrics")).text
    assert 'metering_http_request_seconds_count{method="GET",route="/v1/settlements/{settlement_id}",status="404"} 2.0' in metrics


async def test_a_new_sqlite_file_has_the_service_page_size_and_an_older_file_keeps_its_own(db, engine_name, tmp_path):
    """New files get 8 KiB pages (an ingest commit writes fewer, bigger ones); a file made
    with SQLite's default 4 KiB keeps them, migrates and takes events all the same."""
    if engine_name != "sqlite":
        return
    async with db.read() as session:
        assert (await session.execute(text("PRAGMA page_size"))).scalar() == SQLITE_PAGE_SIZE == 8192
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:  # as an earlier release made it
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE made_before (x)")
    url = f"sqlite+aiosqlite:///{old}"
    await asyncio.to_thread(upgrade, url)  # it runs an event loop of its own
    older = create_database(url)
    try:
        rows = parse_events(msgspec.json.encode([event("sandbox.running", "2026-01-01T00:00:00Z")]), batch=True,
                            max_events=1, template_known=lambda t, u: True, latest_us=2**62, received_us=0)
        assert (await store_batch(older, rows)).accepted == 1
    finally:
        await older.dispose()
    with sqlite3.connect(old) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
