"""``metering export`` as a subprocess: the same bytes as the API, a progress bar only on a terminal."""

import os
import pty
import subprocess
import sys

import pytest

from tests.exports.conftest import JAN, JAN_PERIOD, bill, export, ingest, read_csv, read_parquet
from tests.exports.test_exports_api import lifecycle
from tests.process import ROOT

pytestmark = pytest.mark.slow


def cli(settings, *args, stderr=subprocess.PIPE):
    env = {"PATH": "/usr/bin:/bin", "METERING_DATABASE_URL": settings.database_url,
           "METERING_PRICING_FILE": str(settings.pricing_file), "METERING_LOG_FORMAT": "json"}
    return subprocess.run([sys.executable, "-m", "metering.cli", "export", *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=stderr, timeout=60)


def window(dataset, fmt, out):
    return [dataset, "--start", JAN["start"], "--end", JAN["end"], "--format", fmt, "--output", str(out)]


async def test_cli_writes_what_the_api_serves(client, auth, settings, tmp_path):
    await ingest(client, auth, lifecycle() + lifecycle(ws="ws_2", sb="sb_b"))
    await bill(client, auth, JAN_PERIOD)
    for dataset in ("usage", "invoices", "invoice_lines"):
        out = tmp_path / f"{dataset}.csv"
        done = cli(settings, *window(dataset, "csv", out))
        assert done.returncode == 0, done.stderr
        # Not a terminal: no progress bar, nothing at all on stderr or stdout.
        assert done.stderr == b"" and done.stdout == b""
        api = (await export(client, auth, dataset, **JAN)).content
        if dataset == "usage":  # only times differ between two runs if an interval is open
            assert read_csv(out.read_bytes()) == read_csv(api)
        else:
            assert out.read_bytes() == api
        assert not (tmp_path / f"{dataset}.csv.partial").exists()

    out = tmp_path / "ws_2.parquet"
    done = cli(settings, *window("usage", "parquet", out), "--workspace", "ws_2")
    assert done.returncode == 0, done.stderr
    table = read_parquet(out.read_bytes())
    assert table.num_rows == 2 and set(table.column("workspace_id").to_pylist()) == {"ws_2"}

    done = cli(settings, *window("invoices", "ndjson", "-"))
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 2


async def test_cli_shows_a_progress_bar_on_a_terminal(client, auth, settings, tmp_path):
    await ingest(client, auth, lifecycle())
    leader, follower = pty.openpty()
    try:
        done = cli(settings, *window("usage", "csv", tmp_path / "u.csv"), stderr=follower)
    finally:
        os.close(follower)
    shown = b""
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not data:
            break
        shown += data
    os.close(leader)
    assert done.returncode == 0
    assert b"usage [" + b"#" * 30 + b"] 100% 2/2 rows" in shown
    assert len(read_csv((tmp_path / "u.csv").read_bytes())) == 2


def test_cli_rejects_bad_arguments(settings, db, tmp_path):
    bad = cli(settings, "usage", "--start", "yesterday", "--end", JAN["end"], "--output", str(tmp_path / "x"))
    assert bad.returncode == 2 and b"RFC 3339" in bad.stderr
    bad = cli(settings, "usage", "--start", JAN["end"], "--end", JAN["start"], "--output", str(tmp_path / "x"))
    assert bad.returncode == 2 and b"end must be after start" in bad.stderr
    bad = cli(settings, "nope", "--start", JAN["start"], "--end", JAN["end"], "--output", str(tmp_path / "x"))
    assert bad.returncode == 2 and b"invalid choice" in bad.stderr
    assert not (tmp_path / "x").exists()
