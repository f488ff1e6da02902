"""Rows per second and peak memory of the server while it streams a 1,000,000-row usage export.

Usage (from the repository root):

    .venv/bin/python -m bench.export [--engine sqlite|postgresql ...] [--rows 1000000] [--format csv ...]
                                     [--before REV] [--rounds N] [--json] [--save]

It makes a fresh database (SQLite file under a temporary directory, or a throw-away
PostgreSQL database on METERING_TEST_PG, default postgresql://postgres@127.0.0.1:5432/test),
migrates it, fills ``usage_intervals`` and ``usage_extensions`` with ``--rows`` rows (4/5
intervals, 1/5 extensions, all in January 2026, none crossing a price change: one export row
each) by INSERT ... SELECT, starts ``metering serve`` on it, warms each format up with a
one-hour export, then streams the January export over HTTP (read and discarded) and reports
its rows per second, the server's CPU time, and the server's RSS before and its peak during
the export (VmHWM after resetting it through /proc/<pid>/clear_refs, cross-checked by
sampling VmRSS every 5 ms).

The floor, measured in the same run before and after the exports: the same rows read by the
raw driver with the export's own queries (sqlite3 ``fetchmany``, an asyncpg cursor's
``fetch``, 5,000 rows at a time, in one read transaction) and discarded: reading alone,
before anything is priced, formatted or sent. Each export is also given as a ratio to the
better of the two floors, which is what compares across machines and busy moments.

``--before REV`` also runs the server of that git revision (its tree unpacked with ``git
archive`` into a temporary directory, run with its own code on this checkout's
virtualenv) against the same database, alternating with this checkout's, ``--rounds``
times: before and after in one run, beside the same floor. ``--json`` ends the output with
one JSON line of every figure; ``--save`` writes it to ``bench/results/export-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import machine_info, save_result  # noqa: E402
from metering.core.pricing import PriceBook  # noqa: E402
from metering.db import create_database  # noqa: E402
from metering.core.lifecycle import LifetimePolicy  # noqa: E402
from metering.exports.usage import usage_parts  # noqa: E402
from metering.migrate import upgrade  # noqa: E402
from tests.exports.bulk import JAN_2026, PeakRss, fill_usage  # noqa: E402
from tests.pgdb import throwaway_database  # noqa: E402
from tests.process import ServerProcess  # noqa: E402

JANUARY = ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z")
FEB_2026 = JAN_2026 + 31 * 86_400_000_000
FETCH_ROWS = 5_000


async def fill(url: str, rows: int) -> None:
    db = create_database(url)
    try:
        await fill_usage(db, rows - rows // 5, rows // 5)
    finally:
        await db.dispose()


def _export_sql(url: str) -> list[str]:
    """The usage export's queries for January, as the database receives them."""
    db = create_database(url)
    try:
        dialect = db.engine.dialect
        # The book only prices rows; the floor prices nothing, so an empty one does.
        parts = usage_parts(PriceBook(), JAN_2026, FEB_2026, None, FEB_2026, LifetimePolicy())
        return [str(p.query.compile(dialect=dialect, compile_kwargs={"literal_binds": True})) for p in parts]
    finally:
        asyncio.run(db.dispose())


def _floor_sqlite(path: str, queries: list[str]) -> int:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        rows = 0
        for sql in queries:
            cursor = conn.execute(sql)
            while chunk := cursor.fetchmany(FETCH_ROWS):
                rows += len(chunk)
        conn.execute("COMMIT")
        return rows
    finally:
        conn.close()


async def _floor_postgresql(url: str, queries: list[str]) -> int:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = 0
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            for sql in queries:
                cursor = await conn.cursor(sql)
                while chunk := await cursor.fetch(FETCH_ROWS):
                    rows += len(chunk)
        return rows
    finally:
        await conn.close()


def floor(url: str, queries: list[str]) -> dict:
    """Rows per second of the raw driver reading the export's rows: the best of two reads."""
    best = 0.0
    for _ in range(2):
        began = time.perf_counter()
        if url.startswith("sqlite"):
            rows = _floor_sqlite(url.split("///", 1)[1], queries)
        else:
            rows = asyncio.run(_floor_postgresql(url, queries))
        best = max(best, rows / (time.perf_counter() - began))
    return {"rows": rows, "rows_per_second": round(best)}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stream(url: str, token: str, fmt: str, start: str, end: str) -> tuple[int, int]:
    size = lines = 0
    with httpx.stream("GET", f"{url}/v1/exports/usage", params={"start": start, "end": end, "format": fmt},
                      headers={"Authorization": f"Bearer {token}"}, timeout=600) as resp:
        resp.raise_for_status()
        for data in resp.iter_bytes():
            size += len(data)
            lines += data.count(b"\n")
    return size, lines


def measure_export(server: ServerProcess, token: str, fmt: str, rows: int) -> dict:
    stream(server.url, token, fmt, JANUARY[0], "2026-01-01T01:00:00Z")  # warm-up
    assert server.proc is not None
    cpu, client_cpu = cpu_seconds(server.proc.pid), time.thread_time()
    began = time.perf_counter()
    with PeakRss(server.proc.pid) as rss:
        size, lines = stream(server.url, token, fmt, *JANUARY)
    took = time.perf_counter() - began
    cpu, client_cpu = cpu_seconds(server.proc.pid) - cpu, time.thread_time() - client_cpu
    data_lines = {"csv": lines - 1, "ndjson": lines}.get(fmt)
    if data_lines is not None and data_lines != rows:
        raise RuntimeError(f"{fmt}: {data_lines:,} rows exported, {rows:,} expected")
    return {"bytes": size, "seconds": round(took, 2), "rows_per_second": round(rows / took),
            "server_cpu_seconds": round(cpu, 2), "client_cpu_seconds": round(client_cpu, 2),
            "rss_before_mib": round(rss.base_kb / 1024, 1), "rss_peak_mib": round(rss.peak_kb / 1024, 1),
            "rss_growth_mib": round(rss.growth_kb / 1024, 1), "vmhwm_reset": rss.hwm_reset}


def _server(url: str, token: str, workdir: Path, tree: Path | None) -> ServerProcess:
    env = {"METERING_DATABASE_URL": url, "METERING_ADMIN_TOKEN": token, "METERING_SCHEDULER__ENABLED": "false",
           "METERING_LOG_LEVEL": "WARNING"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return ServerProcess(env, workdir / "server.log", cwd=tree).start()


def _show(label: str, fmt: str, e: dict) -> None:
    print(f"{label:7s} {fmt:8s} {e['rows_per_second']:>9,} rows/s = {e['ratio_to_floor']:.2f} of the floor: "
          f"{e['bytes'] / 1e6:.1f} MB in {e['seconds']} s, CPU: server {e['server_cpu_seconds']} s, "
          f"client {e['client_cpu_seconds']} s; RSS {e['rss_before_mib']:.0f} MiB, peak {e['rss_peak_mib']:.0f} MiB "
          f"(+{e['rss_growth_mib']} MiB, VmHWM reset: {'yes' if e['vmhwm_reset'] else 'no'})", flush=True)


def run(url: str, rows: int, formats: list[str], workdir: Path, trees: dict[str, Path | None],
        rounds: int = 1) -> dict:
    """Each tree's server in turn, ``rounds`` times, on one database, between two floors."""
    upgrade(url)
    began = time.monotonic()
    asyncio.run(fill(url, rows))
    print(f"filled {rows:,} rows in {time.monotonic() - began:.1f} s", flush=True)
    queries = _export_sql(url)
    out: dict = {"engine": "sqlite" if url.startswith("sqlite") else "postgresql", "rows": rows,
                 "floor_before": floor(url, queries), "rounds": []}
    print(f"floor            {out['floor_before']['rows_per_second']:>9,} rows/s (raw driver read, discarded)",
          flush=True)
    token = "adm_" + secrets.token_hex(16)
    for _ in range(rounds):
        for label, tree in trees.items():
            server = _server(url, token, workdir, tree)
            try:
                out["rounds"].append({"tree": label, "exports": {
                    fmt: measure_export(server, token, fmt, rows) for fmt in formats}})
            finally:
                server.stop()
    out["floor_after"] = floor(url, queries)
    print(f"floor            {out['floor_after']['rows_per_second']:>9,} rows/s (again, after the exports)", flush=True)
    best = max(out["floor_before"]["rows_per_second"], out["floor_after"]["rows_per_second"])
    for run_ in out["rounds"]:
        for fmt, e in run_["exports"].items():
            e["ratio_to_floor"] = round(e["rows_per_second"] / best, 3)
            _show(run_["tree"], fmt, e)
    # Each tree's best round per format (a busy machine only ever makes a run slower).
    for label in trees:
        out[label] = {fmt: max((r["exports"][fmt] for r in out["rounds"] if r["tree"] == label),
                               key=lambda e: e["rows_per_second"]) for fmt in formats}
    return out


def measure(engine: str, rows: int, formats: list[str], trees: dict[str, Path | None] | None = None,
            rounds: int = 1) -> dict:
    """``run`` on a fresh database; by default this checkout's server once (as ``exports``)."""
    with tempfile.TemporaryDirectory(prefix="metering-export-") as tmp:
        workdir = Path(tmp)
        trees = trees or {"exports": None}
        if engine == "sqlite":
            return run(f"sqlite+aiosqlite:///{workdir / 'bench.db'}", rows, formats, workdir, trees, rounds)
        with throwaway_database("metering_bench") as url:
            return run(url, rows, formats, workdir, trees, rounds)


def unpack(rev: str, into: Path) -> Path:
    """The tree of ``rev`` as plain files (``git archive``: no worktree, nothing in .git changes)."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", action="append", choices=["csv", "ndjson", "parquet"])
    parser.add_argument("--before", metavar="REV", help="also run the server of this git revision, alternating")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    parser.add_argument("--save", action="store_true", help="write bench/results/export-<date>.json")
    args = parser.parse_args()
    formats = args.format or ["csv", "ndjson", "parquet"]
    results: dict = {"machine": machine_info(), "engines": {}}
    with tempfile.TemporaryDirectory(prefix="metering-before-") as tmp:
        trees: dict[str, Path | None] = {"exports": None}
        if args.before:
            rev = subprocess.run(["git", "rev-parse", args.before], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.strip()
            results["before"] = rev
            trees = {"before": unpack(rev, Path(tmp)), "exports": None}
        for engine in args.engine or ["sqlite"]:
            print(f"-- {engine}", flush=True)
            results["engines"][engine] = measure(engine, args.rows, formats, trees, args.rounds)
    if args.save:
        save_result("export", results)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
