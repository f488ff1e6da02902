from datetime import datetime, timedelta, timezone


def future(days: int) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


BOOK = {
    "giga-mini": {"hourly": "0.12", "extension": "0.03"},
    "giga-standard": {"hourly": "0.20", "extension": "0.05"},
    "giga-pro": {"hourly": "0.40", "extension": "0.10"},
    "giga-max": {"hourly": "0.80", "extension": "0.20"},
    "linux-toolkit-standard": {"hourly": "0.20", "extension": "0.05"},
}


async def test_prices_at_a_time(client, make_token):
    auth = await make_token("usage:read")
    body = (await client.get("/v1/prices", params={"at": "2026-01-01T00:00:00Z"}, headers=auth)).json()
    assert body["effective_from"] == "2020-01-01T00:00:00Z"
    assert body["prices"]["giga-mini"] == {"hourly": "0.100000", "extension": "0.025000"}
    assert body["prices"]["linux-toolkit-standard"]["hourly"] == "0.200000"
    assert body["run_tiers"] == ["0.500000", "1.000000", "2.000000"]
    later = (await client.get("/v1/prices", params={"at": "2026-03-01T12:00:00Z"}, headers=auth)).json()
    assert later["prices"]["giga-mini"]["hourly"] == "0.130000"
    assert (await client.get("/v1/prices", params={"at": "2019-01-01T00:00:00Z"}, headers=auth)).status_code == 404
    assert (await client.get("/v1/prices", params={"at": "nope"}, headers=auth)).status_code == 422
    assert (await client.get("/v1/prices")).status_code == 401


async def test_add_future_version_survives_restart(client, admin, settings):
    when = future(30)
    resp = await client.post("/v1/prices", json={"effective_from": when, "prices": BOOK}, headers=admin)
    assert resp.status_code == 201, resp.text
    # The same effective_from again: never changed.
    again = await client.post("/v1/prices", json={"effective_from": when, "prices": {**BOOK, "giga-mini": {
        "hourly": "9", "extension": "9"}}}, headers=admin)
    assert again.status_code == 409
    # A new app (a restart) sees it.
    from litestar.testing import AsyncTestClient

    from metering.api.app import create_app

    async with AsyncTestClient(app=create_app(settings)) as fresh:
        body = (await fresh.get("/v1/prices", params={"at": future(31)}, headers=admin)).json()
    assert body["effective_from"] == when
    assert body["prices"]["giga-mini"]["hourly"] == "0.120000"


async def test_add_version_rules(client, admin, make_token):
    past = {"effective_from": "2026-01-01T00:00:00Z", "prices": BOOK}
    assert (await client.post("/v1/prices", json=past, headers=admin)).status_code == 422
    dropped = {"effective_from": future(10), "prices": {"giga-mini": BOOK["giga-mini"]}}
    assert (await client.post("/v1/prices", json=dropped, headers=admin)).status_code == 422
    garbage = {"effective_from": future(10), "prices": {"giga-mini": {"hourly": 0.1, "extension": "x"}}}
    resp = await client.post("/v1/prices", json=garbage, headers=admin)
    assert resp.status_code == 422
    reader = await make_token("usage:read")
    assert (await client.post("/v1/prices", json=past, headers=reader)).status_code == 403


async def test_new_template_becomes_known_to_ingest(client, admin, make_token):
    writer = await make_token("events:write")
    ev = {"specversion": "1.0", "id": "e1", "source": "/s", "type": "sandbox.running", "time": "2026-01-01T00:00:00Z",
          "data": {"workspace_id": "w", "deployment_id": "d", "sandbox_id": "s", "template": "giga-ultra"}}
    resp = await client.post("/v1/events", json=ev, headers={**writer, "Content-Type": "application/cloudevents+json"})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "data.template"
