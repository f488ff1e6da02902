"""A large export from the real server process keeps its memory flat.

200,000 usage rows (150,000 intervals, 50,000 extensions) are streamed from ``metering serve``
as CSV and as Parquet; the server's peak RSS may grow by at most ``CEILING_MB`` over what it
used before. Holding the rows, or the file, in memory would take several times that.
"""

import asyncio
import sqlite3
import time

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import ADMIN_TOKEN
from tests.exports.bulk import PeakRss, fill_usage
from tests.factories import BATCH, event
from tests.process import ServerProcess

pytestmark = pytest.mark.slow

INTERVALS, EXTENSIONS = 150_000, 50_000
CEILING_MB = 20
JAN = {"start": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00Z"}


@pytest.fixture
def server(db_url, db, tmp_path):
    proc = ServerProcess(
        {"METERING_DATABASE_URL": db_url, "METERING_ADMIN_TOKEN": ADMIN_TOKEN,
         "METERING_SCHEDULER__ENABLED": "false", "METERING_LOG_LEVEL": "WARNING"},
        tmp_path / "server.log",
    ).start()
    yield proc
    proc.stop()


def stream_export(server, fmt: str, **params) -> tuple[int, int]:
    """Read an export as it streams; returns (bytes, lines)."""
    size = lines = 0
    with httpx.stream("GET", f"{server.url}/v1/exports/usage", params={**params, "format": fmt},
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60) as resp:
        assert resp.status_code == 200
        for data in resp.iter_bytes():
            size += len(data)
            lines += data.count(b"\n")
    return size, lines


async def test_large_export_memory_stays_flat(server, db):
    await fill_usage(db, INTERVALS, EXTENSIONS)
    for fmt in ("csv", "parquet"):
        # Warm up (imports, pools, the price book) on a one-hour export first.
        stream_export(server, fmt, start="2026-01-01T00:00:00Z", end="2026-01-01T01:00:00Z")
        began = time.monotonic()
        with PeakRss(server.proc.pid) as rss:
            size, lines = stream_export(server, fmt, **JAN)
        took = time.monotonic() - began
        if fmt == "csv":
            assert lines == 1 + INTERVALS + EXTENSIONS
        assert size > 10_000_000 if fmt == "csv" else size > 1_000_000
        print(f"{fmt}: {size:,} bytes in {took:.1f} s, RSS {rss.base_kb // 1024} MB -> peak {rss.peak_kb // 1024} MB")
        assert rss.growth_kb < CEILING_MB * 1024, f"{fmt}: peak RSS grew {rss.growth_kb // 1024} MB"


async def open_transactions(db, db_url) -> list:
    """Connections of the database still inside a transaction (PostgreSQL: what each ran
    last, and when it began), or readers still holding a snapshot, which keep a full
    checkpoint from finishing (SQLite: a one-item list)."""
    if db.is_sqlite:
        conn = sqlite3.connect(db_url.split("///", 1)[1])
        try:
            return ["busy"] * conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            conn.close()
    async with db.connect() as conn:
        return [tuple(row) for row in (await conn.execute(text(
            "SELECT pid, client_port, state, query, backend_start, xact_start FROM pg_stat_activity "
            "WHERE datname = current_database() AND state LIKE 'idle in transaction%' "
            "AND pid <> pg_backend_pid()"))).all()]


async def test_abandoned_exports_give_their_connections_back(server, db, db_url):
    # More abandoned downloads than the pool has connections (5 + 5 overflow on SQLite,
    # 5 + 10 on PostgreSQL): a leaked connection per export would hang the last request.
    # Half hang up after the header row, half midway, while the next chunks are being read.
    await fill_usage(db, 40_000, 10_000)  # megabytes: the server is mid-export at the hang-up
    ten_years = {"start": "2020-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"}
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for i in range(20):
        with httpx.stream("GET", f"{server.url}/v1/exports/usage", params=ten_years, headers=auth, timeout=10) as resp:
            assert resp.status_code == 200
            received = 0
            for data in resp.iter_bytes():  # the header row, or about a megabyte, then hang up
                received += len(data)
                if i % 2 == 0 or received > 1_000_000:
                    break
    # Nothing is left inside a transaction once the server has noticed (give it a moment).
    deadline = time.monotonic() + 10
    while await open_transactions(db, db_url) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert await open_transactions(db, db_url) == []
    size, lines = stream_export(server, "csv", **ten_years)
    assert lines == 1 + 50_000
    resp = httpx.get(f"{server.url}/v1/exports/invoices", params=ten_years, headers=auth, timeout=10)
    assert resp.status_code == 200
    # And the database still takes writes.
    running = event("sandbox.running", "2026-03-01T00:00:00Z", workspace_id="ws_x")
    resp = httpx.post(f"{server.url}/v1/events", json=[running], headers={**auth, **BATCH}, timeout=10)
    assert resp.status_code == 202, resp.text
