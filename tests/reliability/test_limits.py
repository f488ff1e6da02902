"""Slow clients, big batches and the health checks, against the real server process."""

import socket
import threading
import time

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.factories import BATCH, event
from tests.process import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def server(db_url, db, tmp_path):
    proc = ServerProcess({
        "METERING_DATABASE_URL": db_url, "METERING_ADMIN_TOKEN": ADMIN_TOKEN, "METERING_SCHEDULER__ENABLED": "false",
        "METERING_HEADER_TIMEOUT_SECONDS": "1", "METERING_REQUEST_TIMEOUT_SECONDS": "2",
    }, tmp_path / "server.log").start()
    yield proc
    proc.stop()


def read_all(sock: socket.socket, limit: float) -> bytes:
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except TimeoutError:
        pass
    return data


def test_slowloris_connections_are_cut_and_health_answers(server):
    host, port = "127.0.0.1", server.port
    silent = [socket.create_connection((host, port)) for _ in range(20)]
    trickling = [socket.create_connection((host, port)) for _ in range(20)]
    for sock in trickling:
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")

    def trickle() -> None:  # one header line every half second, never the blank line
        for n in range(12):
            for sock in trickling:
                try:
                    sock.sendall(b"X-Slow-%d: y\r\n" % n)
                except OSError:
                    pass
            time.sleep(0.5)

    feeder = threading.Thread(target=trickle)
    feeder.start()
    # The service keeps answering everyone else meanwhile.
    for _ in range(5):
        assert httpx.get(f"{server.url}/health/live", timeout=2).status_code == 200
    started = time.monotonic()
    answers = [read_all(sock, 6) for sock in trickling] + [read_all(sock, 4) for sock in silent]
    feeder.join()
    assert time.monotonic() - started < 10
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert b"application/problem+json" in answer


def test_slow_body_is_408(server):
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\nAuthorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n\r\n{")
    answer = read_all(sock, 5)
    assert answer.startswith(b"HTTP/1.1 408")
    # Counted as the client's doing, not as a 5xx of the service (the app saw the body end early).
    metrics = httpx.get(f"{server.url}/metrics").text
    posts = [line for line in metrics.splitlines() if line.startswith("metering_http_request_seconds_count")
             and 'method="POST"' in line]
    assert posts and all('status="499"' in line for line in posts), posts


def test_health_answers_while_a_10k_batch_is_ingested(server):
    batch = [event("sandbox.extended", "2026-01-01T00:00:00Z", minutes=15, sandbox_id=f"sb_{i % 500}")
             for i in range(10_000)]
    result: dict = {}

    def post() -> None:
        result["resp"] = httpx.post(f"{server.url}/v1/events", json=batch, timeout=60,
                                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}", **BATCH})

    poster = threading.Thread(target=post)
    poster.start()
    during = []
    while poster.is_alive():
        resp = httpx.get(f"{server.url}/health/ready", timeout=10)
        during.append((resp.status_code, poster.is_alive()))
        time.sleep(0.01)
    poster.join()
    assert result["resp"].status_code == 202
    assert result["resp"].json() == {"accepted": 10_000, "duplicates": 0}
    assert during and all(code == 200 for code, _ in during)
    assert any(alive for _, alive in during), "no health check was answered while the batch was in flight"


def test_batch_and_body_limits_hold_on_the_real_server(server):
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    too_many = [event("sandbox.extended", "2026-01-01T00:00:00Z", minutes=15) for _ in range(10_001)]
    resp = httpx.post(f"{server.url}/v1/events", json=too_many, headers={**auth, **BATCH}, timeout=60)
    assert resp.status_code == 413
    huge = b"[" + b" " * (17 * 1024 * 1024) + b"]"
    resp = httpx.post(f"{server.url}/v1/events", content=huge, headers={**auth, **BATCH}, timeout=60)
    assert resp.status_code == 413
    assert resp.headers["content-type"].startswith("application/problem+json")
