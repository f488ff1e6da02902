"""One mistake, one answer: every JSON endpoint answers each mistake with the same status and
the same problem ``type``, whichever endpoint and whichever way the mistake arrives."""

import gzip
import json

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from metering.api.app import create_app
from tests.factories import event

LIMIT = 1024 * 1024  # room for the 10^5-deep bodies
JSON_ENDPOINTS = ["/v1/tokens", "/v1/events", "/v1/prices", "/v1/settlements", "/v1/billing-runs"]
DEEP = 100_000


def problem_type(status: int) -> str:
    return {400: "bad-request", 413: "payload-too-large", 415: "unsupported-media-type",
            422: "validation"}[status]


MISTAKES = {  # name -> (body, headers, status)
    "missing body": (b"", {"Content-Type": "application/json"}, 400),
    "unparsable body": (b'{"name": ', {"Content-Type": "application/json"}, 400),
    "not an object": (b"null", {"Content-Type": "application/json"}, 400),
    "wrong content type": (b'{"name": "x"}', {"Content-Type": "text/plain"}, 415),
    "form content type": (b"name=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    "unknown encoding": (b'{"name": "x"}', {"Content-Type": "application/json", "Content-Encoding": "br"}, 415),
    "too large, declared": (b"[" + b"1," * LIMIT + b"1]", {"Content-Type": "application/json"}, 413),
    "too deep, arrays": (b"[" * DEEP + b"]" * DEEP, {"Content-Type": "application/json"}, 400),
    "too deep, objects": (b'{"a":' * DEEP + b"1" + b"}" * DEEP, {"Content-Type": "application/json"}, 400),
}


@pytest.fixture
async def small(settings, db):
    app = create_app(msgspec.structs.replace(settings, max_body_bytes=LIMIT))
    async with AsyncTestClient(app=app) as client:
        yield client


async def test_every_json_endpoint_gives_each_mistake_one_answer(small, admin):
    seen: dict[int, set[str]] = {}
    for path in JSON_ENDPOINTS:
        for name, (body, headers, status) in MISTAKES.items():
            resp = await small.post(path, content=body, headers={**admin, **headers})
            assert resp.status_code == status, (path, name, resp.text[:300])
            assert resp.headers["content-type"].startswith("application/problem+json")
            problem = resp.json()
            assert problem["status"] == status and problem["type"].endswith("/" + problem_type(status))
            seen.setdefault(status, set()).add(problem["type"])
        # gzip is for events only.
        if path != "/v1/events":
            resp = await small.post(path, content=gzip.compress(b'{"name": "x"}'),
                                    headers={**admin, "Content-Type": "application/json", "Content-Encoding": "gzip"})
            assert resp.status_code == 415, (path, resp.text)
    assert all(len(types) == 1 for types in seen.values()), seen
    assert (await small.get("/health/live")).status_code == 200


async def test_gzip_events_are_decoded_and_limited_after_decompression(small, admin):
    batch = [event("sandbox.running", "2026-01-01T00:00:00Z", sandbox_id=f"sb_{i}") for i in range(50)]
    headers = {**admin, "Content-Type": "application/cloudevents-batch+json", "Content-Encoding": "gzip"}
    resp = await small.post("/v1/events", content=gzip.compress(json.dumps(batch).encode()), headers=headers)
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"accepted": 50, "duplicates": 0}
    # A bomb: a few hundred bytes that decompress past the limit (a hundred times over).
    bomb = gzip.compress(b"[" + b" " * (LIMIT * 100) + b"]")
    assert len(bomb) < LIMIT
    resp = await small.post("/v1/events", content=bomb, headers=headers)
    assert resp.status_code == 413 and resp.json()["type"].endswith("/payload-too-large")
    resp = await small.post("/v1/events", content=b"not gzip at all", headers=headers)
    assert resp.status_code == 400
    resp = await small.post("/v1/events", content=gzip.compress(b"[" * DEEP), headers=headers)
    assert resp.status_code == 400 and "deeper" in resp.json()["detail"]


@pytest.mark.parametrize("url", [
    "/v1/invoices?workspace_id=not%20an%20id",
    "/v1/settlements?workspace_id=not%20an%20id",
    "/v1/settlements?invoice_id=" + "x" * 129,
    "/v1/settlements?payer=0x123",
    "/v1/reports?workspace_id=a/b",
    "/v1/exports/usage?start=2026-01-01T00:00:00Z&end=2026-01-02T00:00:00Z&workspace_id=a%20b",
    "/v1/workspaces/a%20b/usage?start=2026-01-01T00:00:00Z&end=2026-01-02T00:00:00Z",
])
async def test_an_invalid_id_in_any_query_is_422_naming_it(client, admin, url):
    resp = await client.get(url, headers=admin)
    assert resp.status_code == 422, resp.text
    problem = resp.json()
    assert problem["type"].endswith("/validation")
    name = url.split("?")[1].split("=")[0] if "workspace_id=" in url or "usage" not in url else "workspace_id"
    name = "workspace_id" if "/usage" in url else name.split("&")[-1] if "&" in name else name
    assert any(e.get("field") in (name, "workspace_id") for e in problem["errors"]), problem


async def test_refusals_of_the_gate_carry_a_request_id_and_are_counted(small, admin):
    resp = await small.post("/v1/tokens", content=b"x", headers={**admin, "Content-Type": "text/plain",
                                                                   "X-Request-ID": "req-gate"})
    assert resp.status_code == 415 and resp.headers["x-request-id"] == "req-gate"
    metrics = (await small.get("/metrics")).text
    assert 'route="body-gate",status="415"' in metrics
