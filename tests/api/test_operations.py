import re

from sqlalchemy import text


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
