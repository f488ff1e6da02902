"""The real server, started through the CLI, fed by the CloudEvents SDK as a client."""

import subprocess
import sys
from datetime import datetime

import httpx
import pytest
from cloudevents.core.bindings.http import to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from tests.conftest import ADMIN_TOKEN
from tests.process import ROOT, ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def server(db_url, db, tmp_path):
    proc = ServerProcess(
        {"METERING_DATABASE_URL": db_url, "METERING_ADMIN_TOKEN": ADMIN_TOKEN,
         "METERING_SCHEDULER__ENABLED": "false"},
        tmp_path / "server.log",
    ).start()
    yield proc
    proc.stop()


def sdk_event(type_: str, time: str, **data) -> CloudEvent:
    when = datetime.fromisoformat(time.replace("Z", "+00:00"))
    return CloudEvent(
        attributes={"type": type_, "source": "/platform/sandboxes", "time": when, "subject": data.get("sandbox_id")},
        data={"workspace_id": "ws_sdk", "deployment_id": "dep_1", **data},
    )


def test_cloudevents_sdk_client_against_real_server(server):
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    made = httpx.post(f"{server.url}/v1/tokens", json={"name": "sdk", "scopes": ["events:write"]}, headers=admin)
    assert made.status_code == 201
    token = made.json()["token"]
    auth = {"Authorization": f"Bearer {token}"}

    fmt = JSONFormat()
    started = sdk_event("sandbox.running", "2026-01-01T00:00:00Z", sandbox_id="sb_1", template="giga-mini")
    message = to_structured(started, fmt)
    resp = httpx.post(f"{server.url}/v1/events", content=message.body, headers={**message.headers, **auth})
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"accepted": 1, "duplicates": 0}
    assert resp.headers["x-request-id"]

    # The same event again is a counted duplicate.
    resp = httpx.post(f"{server.url}/v1/events", content=message.body, headers={**message.headers, **auth})
    assert resp.json() == {"accepted": 0, "duplicates": 1}

    # A batch of SDK events.
    batch = [
        sdk_event("sandbox.extended", "2026-01-01T00:10:00Z", sandbox_id="sb_1", template="giga-mini", minutes=30),
        sdk_event("sandbox.stopped", "2026-01-01T01:00:00Z", sandbox_id="sb_1"),
    ]
    body = b"[" + b",".join(fmt.write(e) for e in batch) + b"]"
    resp = httpx.post(
        f"{server.url}/v1/events", content=body,
        headers={**auth, "Content-Type": "application/cloudevents-batch+json"},
    )
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"accepted": 2, "duplicates": 0}

    # Metrics count what was ingested.
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "metering_events_accepted_total 3.0" in metrics
    assert "metering_events_duplicate_total 1.0" in metrics

    # No token, admin or service, ever reaches the logs.
    server.stop()
    logs = server.logs()
    assert '"request_id"' in logs
    assert token not in logs and token[7:] not in logs
    assert ADMIN_TOKEN not in logs


def test_cli_token_create_prints_token_once(db_url, db):
    out = subprocess.run(
        [sys.executable, "-m", "metering.cli", "tokens", "create", "--name", "cli",
         "--scope", "events:write", "--scope", "usage:read", "--workspace", "ws_1"],
        cwd=ROOT, env={"METERING_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    )
    token = out.stdout.strip()
    assert token.startswith("mtr_sk_") and len(token) == 39
    assert token not in out.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "metering.cli", "tokens", "create", "--name", "cli", "--scope", "nope"],
        cwd=ROOT, env={"METERING_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
    )
    assert bad.returncode == 2 and "unknown scope" in bad.stderr
