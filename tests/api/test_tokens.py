import re

from tests.factories import SINGLE, event

NOW = "2026-01-01T00:00:00Z"


async def test_admin_creates_token_shown_once(client, admin):
    resp = await client.post(
        "/v1/tokens", json={"name": "ingest", "scopes": ["events:write"], "workspace_id": "ws_1"}, headers=admin
    )
    assert resp.status_code == 201
    body = resp.json()
    assert re.fullmatch(r"mtr_sk_[0-9a-f]{32}", body["token"])
    assert body["scopes"] == ["events:write"]
    assert body["workspace_id"] == "ws_1"
    assert body["created_at"].endswith("Z")
    assert set(body) == {"id", "token", "name", "scopes", "workspace_id", "created_at"}


async def test_token_is_stored_hashed(client, admin, db):
    from sqlalchemy import text

    resp = await client.post("/v1/tokens", json={"name": "x", "scopes": ["admin"]}, headers=admin)
    token = resp.json()["token"]
    async with db.read() as session:
        stored = (await session.execute(text("SELECT token_hash FROM api_tokens"))).scalars().all()
    assert stored and token not in stored and all(token[7:] not in s for s in stored)


async def test_missing_and_bad_tokens_are_401_problem_details(client):
    for headers in ({}, {"Authorization": "Bearer mtr_sk_" + "0" * 32}, {"Authorization": "Basic abc"}):
        resp = await client.post("/v1/events", json=event("sandbox.running", NOW), headers={**headers, **SINGLE})
        assert resp.status_code == 401
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.json()["status"] == 401


async def test_scope_is_required(client, make_token):
    reader = await make_token("usage:read")
    resp = await client.post("/v1/events", json=event("sandbox.running", NOW), headers={**reader, **SINGLE})
    assert resp.status_code == 403
    assert resp.json()["title"] == "Forbidden"
    resp = await client.post("/v1/tokens", json={"name": "x", "scopes": ["admin"]}, headers=reader)
    assert resp.status_code == 403


async def test_revoked_token_fails_at_once(client, admin):
    made = (await client.post("/v1/tokens", json={"name": "w", "scopes": ["events:write"]}, headers=admin)).json()
    auth = {"Authorization": f"Bearer {made['token']}", **SINGLE}
    assert (await client.post("/v1/events", json=event("sandbox.running", NOW), headers=auth)).status_code == 202
    assert (await client.delete(f"/v1/tokens/{made['id']}", headers=admin)).status_code == 204
    assert (await client.post("/v1/events", json=event("sandbox.running", NOW), headers=auth)).status_code == 401
    assert (await client.delete("/v1/tokens/tok_nope", headers=admin)).status_code == 404


async def test_admin_scope_implies_all(client, make_token):
    boss = await make_token("admin")
    resp = await client.post("/v1/events", json=event("sandbox.running", NOW), headers={**boss, **SINGLE})
    assert resp.status_code == 202


async def test_invalid_token_requests_are_422(client, admin):
    resp = await client.post("/v1/tokens", json={"name": "x", "scopes": ["nope"]}, headers=admin)
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "scopes[0]"
    resp = await client.post("/v1/tokens", json={"name": "x", "scopes": ["admin"], "workspace_id": "bad id!"},
                             headers=admin)
    assert resp.status_code == 422
    resp = await client.post("/v1/tokens", json={"name": "x"}, headers=admin)
    assert resp.status_code in (400, 422)
    assert resp.headers["content-type"].startswith("application/problem+json")
