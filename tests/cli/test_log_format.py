"""One log format for every command: JSON lines with the same fields, or a console format on a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess

import pytest

from metering.logging import FIELDS
from tests.cli.helpers import METERING, clean_env, http
from tests.conftest import ADMIN_TOKEN
from tests.process import ServerProcess

pytestmark = pytest.mark.slow

MONTH = ("--period-start", "2026-01-01T00:00:00Z", "--period-end", "2026-02-01T00:00:00Z")
COMMANDS = {  # what each runs, and the command named in its lines
    "tokens create": ("tokens", "create", "--name", "ops", "--scope", "usage:read"),
    "billing run": ("billing", "run", *MONTH),
    "scheduler": ("scheduler", "--once", "--job", "billing"),
    "export (refused)": ("export", "usage", "--start", "yesterday", "--end", "2026-02-01T00:00:00Z", "--output", "-"),
}


def json_lines(stderr: str, command: str) -> list[dict]:
    """Every line of ``stderr`` as a JSON object with the common fields, naming ``command``."""
    lines = [json.loads(line) for line in stderr.splitlines()]
    for line in lines:
        assert set(FIELDS) <= line.keys(), line
        assert line["command"] == command, line
    return lines


@pytest.fixture
def env(tmp_path):  # type: ignore[no-untyped-def]
    return clean_env(METERING_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/metering.db",
                     METERING_REPORTS_DIR=str(tmp_path / "reports"), METERING_ADMIN_TOKEN=ADMIN_TOKEN,
                     METERING_SCHEDULER__ENABLED="false")


def test_every_command_logs_json_lines_with_the_same_fields(env, tmp_path):
    # The server migrates the database first; then the commands run side by side.
    server = ServerProcess(env, tmp_path / "server.log").start(timeout=90)
    procs = {name: subprocess.Popen([str(METERING), *args], env=env, cwd=tmp_path, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, args in COMMANDS.items()}
    try:
        made = http.post(f"{server.url}/v1/tokens", json={"name": "api", "scopes": ["usage:read"]},
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        token = made.json()["token"]
        usage = http.get(f"{server.url}/v1/workspaces/ws_1/usage?start=2026-01-01T00:00:00Z&end=2026-02-01T00:00:00Z",
                          headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-logs-1"})
        assert usage.status_code == 200, usage.text
        outputs = {name: proc.communicate(timeout=60) for name, proc in procs.items()}
    finally:
        server.stop()

    events = {name: json_lines(stderr, name.split(" (")[0]) for name, (_, stderr) in outputs.items()}
    assert [e["event"] for e in events["tokens create"]] == ["token_created"]
    assert [e["event"] for e in events["billing run"]] == ["billing_run"]
    assert "job_run" in [e["event"] for e in events["scheduler"]]
    assert [(e["event"], e["level"]) for e in events["export (refused)"]] == [("command_failed", "error")]
    assert "RFC 3339" in events["export (refused)"][0]["detail"]

    served = json_lines(server.logs(), "serve")
    loggers = {e["logger"] for e in served}
    assert {"uvicorn.error", "metering.access", "metering.tokens.service"} <= loggers  # stdlib and structlog alike
    request = [e for e in served if e["event"] == "request" and e["request_id"] == "req-logs-1"]
    assert [(e["path"], e["status"]) for e in request] == [("/v1/workspaces/ws_1/usage", 200)]
    created = [e for e in served if e["event"] == "token_created"]
    assert created and all("request_id" in e for e in created)  # logged inside its request

    # Tokens are printed once on standard output, never logged.
    cli_token = outputs["tokens create"][0].strip()
    everything = server.logs() + "".join(stderr for _, stderr in outputs.values())
    for secret in (cli_token, token, ADMIN_TOKEN):
        assert secret.startswith(("mtr_sk_", "adm_")) and secret not in everything
        assert secret[-32:] not in everything


def test_a_terminal_gets_the_console_format(env, tmp_path):
    parent, child = pty.openpty()
    with subprocess.Popen([str(METERING), *COMMANDS["tokens create"]], env=env, cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=child) as proc:
        os.close(child)
        token = proc.stdout.read().decode().strip()
        shown = b""
        while True:
            try:
                chunk = os.read(parent, 4096)
            except OSError:  # the terminal's other end closed: the command is done
                break
            if not chunk:
                break
            shown += chunk
    os.close(parent)
    assert proc.returncode == 0
    lines = shown.decode().splitlines()
    assert len(lines) == 1
    # 2026-12-02T03:04:05.123456Z [info     ] token_created   [metering.tokens.service] command='tokens create' ...
    assert "[info" in lines[0] and "token_created" in lines[0] and "command='tokens create'" in lines[0]
    assert not lines[0].startswith("{")
    assert token.startswith("mtr_sk_") and token not in shown.decode()
