"""The read side: a usage query on a large store, and a billing run over many workspaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

from bench.dataset import YEAR_START, build_usage_store, sandbox
from bench.server import running_server
from metering.core.timeutil import format_time, to_us
from metering.migrate import upgrade
from tests.process import ROOT


def _fresh_sqlite(workdir: Path) -> tuple[Path, str]:
    tmp = Path(tempfile.mkdtemp(prefix="metering-bench-", dir=workdir))
    url = f"sqlite+aiosqlite:///{tmp / 'metering.db'}"
    upgrade(url)
    return tmp, url


def _percentiles(values: list[float]) -> dict:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": round(ordered[-1] * 1000, 3)}


def usage_query(events: int, workspaces: int, queries: int, workdir: Path) -> dict:
    """p50/p99 of ``GET /usage`` for one workspace-month, ``events`` events stored (SQLite)."""
    tmp, url = _fresh_sqlite(workdir)
    try:
        began = time.perf_counter()
        build_usage_store(url.split("///", 1)[1], sandboxes=events // 4, workspaces=workspaces)
        built = time.perf_counter() - began
        months = [to_us(datetime(2025, m, 1, tzinfo=timezone.utc)) for m in range(1, 13)]
        months.append(to_us(datetime(2026, 1, 1, tzinfo=timezone.utc)))
        with running_server(url, tmp / "server.log") as (server, token):
            client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            latencies, items = [], 0
            for i in range(queries + 20):  # the first 20 warm the server up, unmeasured
                ws = sandbox(i * 7919, workspaces, YEAR_START, 1)[0]
                m = i % 12
                params = {"start": format_time(months[m]), "end": format_time(months[m + 1]),
                          "as_of": format_time(months[12])}
                t = time.perf_counter()
                resp = client.get(f"/v1/workspaces/{ws}/usage", params=params)
                elapsed = time.perf_counter() - t
                resp.raise_for_status()
                if i >= 20:
                    latencies.append(elapsed)
                    items += len(resp.json()["items"])
        per_ws_month = events / 4 / workspaces / 12
        return {"engine": "sqlite", "events": events, "workspaces": workspaces, "queries": queries,
                "intervals_per_workspace_month": round(per_ws_month, 1), "build_seconds": round(built, 1),
                "latency_ms": _percentiles(latencies)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def billing_run(workspaces: int, intervals: int, workdir: Path) -> dict:
    """``metering billing run`` for January 2026 over ``intervals`` intervals in ``workspaces`` workspaces."""
    tmp, url = _fresh_sqlite(workdir)
    try:
        january = to_us(datetime(2026, 1, 1, tzinfo=timezone.utc))
        build_usage_store(url.split("///", 1)[1], sandboxes=intervals, workspaces=workspaces, with_events=False,
                          span_start=january, span_us=28 * 24 * 3600 * 1_000_000)
        env = {**os.environ, "METERING_DATABASE_URL": url, "METERING_SCHEDULER__ENABLED": "false",
               "METERING_REPORTS_DIR": str(tmp / "reports")}
        argv = [sys.executable, "-m", "metering.cli", "billing", "run",
                "--period-start", "2026-01-01T00:00:00Z", "--period-end", "2026-02-01T00:00:00Z"]
        began = time.perf_counter()
        out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
        elapsed = time.perf_counter() - began
        if out.returncode != 0:
            raise RuntimeError(f"billing run failed: {out.stderr[-2000:]}")
        return {"engine": "sqlite", "workspaces": workspaces, "intervals": intervals, "extensions": intervals,
                "seconds": round(elapsed, 2), "output": out.stdout.strip()[-300:]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
