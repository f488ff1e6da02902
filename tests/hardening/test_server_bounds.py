"""Against the real server process: hostile bodies do not kill it, and the event loop keeps
answering while the largest allowed batch, usage query and export are in flight."""

import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.factories import BATCH, SINGLE, event
from tests.process import ROOT, ServerProcess

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DEEP = 100_000
JSON = {"Content-Type": "application/json"}
TARGETS = [("/v1/tokens", JSON), ("/v1/events", SINGLE), ("/v1/events", BATCH), ("/v1/events", JSON),
           ("/v1/prices", JSON), ("/v1/settlements", JSON), ("/v1/billing-runs", JSON)]


@pytest.fixture
def server(db_url, db, tmp_path):
    proc = ServerProcess({"METERING_DATABASE_URL": db_url, "METERING_ADMIN_TOKEN": ADMIN_TOKEN,
                          "METERING_SCHEDULER__ENABLED": "false", "METERING_MAX_BODY_BYTES": str(8 * 1024 * 1024),
                          "METERING_REPORTS_DIR": str(tmp_path / "reports")}, tmp_path / "server.log").start(60)
    yield proc
    proc.stop()


def test_deep_bodies_to_every_json_endpoint_are_400_and_the_process_lives(server):
    bodies = [b"[" * DEEP + b"]" * DEEP, b'{"a":' * DEEP + b"1" + b"}" * DEEP, b"[" * DEEP, b'{"a":[' * DEEP]
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
        for path, headers in TARGETS:
            for body in bodies:
                resp = http.post(path, content=body, headers=headers)
                assert resp.status_code == 400, (path, headers, resp.text[:200])
                assert "deeper than 64" in resp.json()["detail"]
        assert http.get("/health/live").status_code == 200
    assert server.proc.poll() is None


def test_too_large_is_one_413_whether_declared_or_chunked(server):
    body = b"[" + b"1," * (4 * 1024 * 1024) + b"1]"

    def chunked():
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
        declared = http.post("/v1/events", content=body, headers=BATCH)
        streamed = http.post("/v1/events", content=chunked(), headers=BATCH)
    assert declared.status_code == streamed.status_code == 413
    assert declared.json()["type"] == streamed.json()["type"]


def latencies_while(server, work) -> list[float]:
    """``/health/live`` latencies (ms), probed every 10 ms by another process while ``work`` runs."""
    probe = subprocess.Popen([sys.executable, "-m", "tests.hardening.loop_probe", server.url], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert probe.stdout.readline().strip() == "ready"
        work()
        out, _ = probe.communicate("", timeout=60)
    finally:
        probe.kill()
    assert probe.returncode == 0
    return sorted(json.loads(out))


def p95(latencies: list[float]) -> float:
    return latencies[int(len(latencies) * 0.95)]


def test_the_loop_answers_within_100ms_under_the_largest_requests(server):
    # The largest batch: 10,000 events (5,000 sandboxes started and stopped within the day),
    # encoded before the clock starts.
    batch = []
    for i in range(5_000):
        start = f"2026-01-01T{i % 24:02d}:{i % 60:02d}:00Z"
        batch.append(event("sandbox.running", start, workspace_id="ws_big", sandbox_id=f"sb_{i}"))
        batch.append(event("sandbox.stopped", f"2026-01-02T{i % 24:02d}:00:00Z", workspace_id="ws_big",
                           sandbox_id=f"sb_{i}"))
    body = json.dumps(batch).encode()
    # A sandbox left running for 10,000 hours: the largest windowed answer.
    ingest_open = event("sandbox.running", "2026-01-01T00:00:00Z", workspace_id="ws_open", sandbox_id="sb_open")
    answers = {}

    with httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as http:
        assert http.post("/v1/events", json=ingest_open, headers=SINGLE).status_code == 202

        def heavy() -> None:  # the answers are checked afterwards, once the probes have stopped
            answers["batch"] = http.post("/v1/events", content=body, headers=BATCH)
            answers["by_sandbox"] = http.get("/v1/workspaces/ws_big/usage", params={
                "start": "2026-01-01T00:00:00Z", "end": "2026-01-03T00:00:00Z", "group_by": "sandbox"})
            answers["hours"] = http.get("/v1/workspaces/ws_open/usage", params={
                "start": "2026-01-01T00:00:00Z", "end": "2027-02-21T16:00:00Z", "window": "hour",
                "as_of": "2027-02-21T16:00:00Z"})
            answers["too_many"] = http.get("/v1/workspaces/ws_open/usage", params={
                "start": "2026-01-01T00:00:00Z", "end": "2027-02-21T17:00:00Z", "window": "hour",
                "as_of": "2027-02-21T17:00:00Z"})
            with http.stream("GET", "/v1/exports/usage", params={
                    "start": "2026-01-01T00:00:00Z", "end": "2026-01-03T00:00:00Z"}) as export:
                answers["export"] = (export.status_code, sum(len(chunk) for chunk in export.iter_bytes()))

        idle = latencies_while(server, lambda: time.sleep(2))
        loaded = latencies_while(server, heavy)

    assert answers["batch"].status_code == 202, answers["batch"].text[:500]
    assert answers["by_sandbox"].status_code == 200 and len(answers["by_sandbox"].json()["items"]) == 5_000
    assert answers["hours"].status_code == 200 and len(answers["hours"].json()["items"]) == 10_000
    assert answers["too_many"].status_code == 422 and {"window", "group_by"} <= {
        e["field"] for e in answers["too_many"].json()["errors"]}
    assert answers["export"][0] == 200 and answers["export"][1] > 100_000
    # The target: 95% of probes answered within 100 ms.  The machine is shared (two cores,
    # other test runs), and the server's process, like the probe's, now and then waits for a
    # core whatever it does: the bound is 100 ms on top of the 95th percentile the same probes
    # see with the server idle, measured just before (a few ms on a quiet machine, tens on a
    # loaded one).  Each probe also stands for those its wait delayed (loop_probe), so a stall
    # counts for as long as it lasts: one of 200 ms, or a few of 150, fail this (as the
    # 10,000-hour answer made in one go on the event loop did, on a quiet machine).
    assert p95(loaded) < 100 + p95(idle), (p95(loaded), p95(idle), len(loaded), loaded[-10:])
