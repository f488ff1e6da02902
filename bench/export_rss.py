"""Peak RSS of the server while it streams a 1,000,000-row usage export.

Usage (from the repository root):

    .venv/bin/python bench/export_rss.py [--engine sqlite|postgresql] [--rows 1000000] [--format csv ...]

It makes a fresh database (SQLite file under a temporary directory, or a throw-away
PostgreSQL database on METERING_TEST_PG, default postgresql://postgres@127.0.0.1:5432/test),
migrates it, fills ``usage_intervals`` and ``usage_extensions`` with ``--rows`` rows (4/5
intervals, 1/5 extensions, all in January 2026) by INSERT ... SELECT, starts ``metering
serve`` on it, warms each format up with a one-hour export, then streams the January export
over HTTP and reports the server's RSS before and its peak during the export (VmHWM after
resetting it through /proc/<pid>/clear_refs, cross-checked by sampling VmRSS every 5 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metering.db import create_database  # noqa: E402
from metering.migrate import upgrade  # noqa: E402
from tests.exports.bulk import PeakRss, fill_usage  # noqa: E402
from tests.pgdb import throwaway_database  # noqa: E402
from tests.process import ServerProcess  # noqa: E402

async def fill(url: str, rows: int) -> None:
    db = create_database(url)
    try:
        await fill_usage(db, rows - rows // 5, rows // 5)
    finally:
        await db.dispose()


def stream(url: str, token: str, fmt: str, start: str, end: str) -> tuple[int, int]:
    size = lines = 0
    with httpx.stream("GET", f"{url}/v1/exports/usage", params={"start": start, "end": end, "format": fmt},
                      headers={"Authorization": f"Bearer {token}"}, timeout=600) as resp:
        resp.raise_for_status()
        for data in resp.iter_bytes():
            size += len(data)
            lines += data.count(b"\n")
    return size, lines


def run(url: str, rows: int, formats: list[str], workdir: Path) -> None:
    upgrade(url)
    began = time.monotonic()
    asyncio.run(fill(url, rows))
    print(f"filled {rows:,} rows in {time.monotonic() - began:.1f} s", flush=True)
    token = "adm_" + secrets.token_hex(16)
    server = ServerProcess({"METERING_DATABASE_URL": url, "METERING_ADMIN_TOKEN": token,
                            "METERING_SCHEDULER__ENABLED": "false", "METERING_LOG_LEVEL": "WARNING"},
                           workdir / "server.log").start()
    try:
        for fmt in formats:
            stream(server.url, token, fmt, "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z")
            began = time.monotonic()
            with PeakRss(server.proc.pid) as rss:
                size, lines = stream(server.url, token, fmt, "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z")
            took = time.monotonic() - began
            shown = f", {lines - 1:,} data lines" if fmt == "csv" else ""
            shown = f", {lines:,} lines" if fmt == "ndjson" else shown
            print(f"{fmt:8s} {size / 1e6:8.1f} MB in {took:6.1f} s{shown}: RSS before {rss.base_kb / 1024:.0f} MiB, "
                  f"peak {rss.peak_kb / 1024:.0f} MiB (+{rss.growth_kb / 1024:.1f} MiB, "
                  f"VmHWM reset: {'yes' if rss.hwm_reset else 'no'})", flush=True)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", action="append", choices=["csv", "ndjson", "parquet"])
    args = parser.parse_args()
    formats = args.format or ["csv", "ndjson", "parquet"]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.engine == "sqlite":
            run(f"sqlite+aiosqlite:///{workdir / 'bench.db'}", args.rows, formats, workdir)
            return
        with throwaway_database("metering_bench") as url:
            run(url, args.rows, formats, workdir)


if __name__ == "__main__":
    main()
