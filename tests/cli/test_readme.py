"""The README's "Trying it" examples, run as written with bash against a fresh server."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.cli.helpers import clean_env
from tests.conftest import ADMIN_TOKEN
from tests.process import ROOT, ServerProcess, free_port

pytestmark = pytest.mark.slow

# The two set-up lines the test does itself: the admin token is set and the server started
# (on a free port, data in a temporary directory) before the rest runs.
SETUP = ("export METERING_ADMIN_TOKEN=", "scripts/serve.sh &")
# Every curl records its status, content type and body, then prints the body as curl would.
RECORDING_CURL = r'''
set -eu
curl() {
  local n=$(( $(cat "$CALLS/count") + 1 ))
  echo "$n" > "$CALLS/count"
  command curl --max-time 60 -o "$CALLS/$n.body" -w '%{http_code} %{content_type}' "$@" > "$CALLS/$n.status"
  cat "$CALLS/$n.body"
}
'''


def readme_examples() -> str:
    """The fenced sh blocks from "## Trying it" to the next section, the set-up lines left out."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Trying it\n")
    section = text[start:text.index("\n## ", start)]
    lines = "\n".join(re.findall(r"```sh\n(.*?)```", section, re.S)).splitlines()
    kept = [line for line in lines if not line.startswith(SETUP)]
    assert len(lines) - len(kept) == len(SETUP)
    return "\n".join(kept)


def expected_answers(script: str) -> dict[int, object]:
    """``# {...}`` comments: the JSON that the curl before them prints, by the curl's number."""
    answers, calls = {}, 0
    for line in script.splitlines():
        code, _, comment = line.partition("#")
        calls += len(re.findall(r"(?<![\w-])curl ", code))
        if comment.strip().startswith("{"):
            answers[calls] = json.loads(comment)
    return answers


def test_the_readme_examples_work_as_written(tmp_path):
    port = free_port()
    script = readme_examples().replace("localhost:8000", f"localhost:{port}")
    calls = tmp_path / "calls"
    calls.mkdir()
    (calls / "count").write_text("0")
    env = clean_env(METERING_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/data/metering.db",
                    METERING_REPORTS_DIR=str(tmp_path / "data" / "reports"), METERING_ADMIN_TOKEN=ADMIN_TOKEN,
                    METERING_SCHEDULER__ENABLED="false")
    server = ServerProcess(env, tmp_path / "server.log", port=port).start(timeout=90)
    try:
        done = subprocess.run(["bash", "-c", RECORDING_CURL + script], env={**env, "CALLS": str(calls)},
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr

    made = int((calls / "count").read_text())
    assert made == len(re.findall(r"(?<![\w-])curl ", re.sub(r"#.*", "", script)))  # each ran, once
    for n in range(1, made + 1):
        status, _, content_type = (calls / f"{n}.status").read_text().partition(" ")
        body = (calls / f"{n}.body").read_bytes()
        assert status.startswith("2"), (n, status, body)
        if "json" in content_type:
            json.loads(body)
    answers = expected_answers(script)
    assert answers  # the README shows some answers; they are what the server says
    for n, answer in answers.items():
        assert json.loads((calls / f"{n}.body").read_bytes()) == answer
    # What the examples did: the event and the batch, billed on one invoice, exported as CSV.
    last = (calls / f"{made}.body").read_text()
    assert last.startswith("kind,workspace_id,") and ",ws_1,dep_1,sb_1,giga-mini," in last
