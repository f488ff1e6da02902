"""The read side: the usage and cost queries on a large store, and a billing run over many workspaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import httpx

from bench.dataset import YEAR_START, build_usage_store, sandbox
from bench.server import running_server
from metering.core.periods import DAY_US
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


MONTHS = [to_us(datetime(2025, m, 1, tzinfo=timezone.utc)) for m in range(1, 13)] \
    + [to_us(datetime(2026, 1, 1, tzinfo=timezone.utc))]
WARM_UP = 20


class ReadStore:
    """The store the read queries share (``events`` events over 2025, SQLite): built once, on
    first use (3-15 minutes of CPU at 10,000,000 events), and deleted on exit."""

    def __init__(self, events: int, workspaces: int, workdir: Path) -> None:
        self.events, self.workspaces, self.workdir = events, workspaces, workdir
        self.tmp: Path | None = None
        self.url = ""
        self.build_seconds = 0.0

    def __enter__(self) -> ReadStore:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _built(self) -> str:
        if self.tmp is None:
            self.tmp, self.url = _fresh_sqlite(self.workdir)
            began = time.perf_counter()
            build_usage_store(self.url.split("///", 1)[1], sandboxes=self.events // 4, workspaces=self.workspaces)
            self.build_seconds = time.perf_counter() - began
        return self.url

    def _measure(self, queries: int, request: Callable[[httpx.Client, int], httpx.Response],
                 count: Callable[[dict], int]) -> tuple[list[float], int]:
        """``queries`` requests after ``WARM_UP`` unmeasured ones, on a fresh server."""
        url = self._built()
        assert self.tmp is not None
        with running_server(url, self.tmp / "server.log") as (server, token):
            client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            latencies, counted = [], 0
            for i in range(queries + WARM_UP):
                t = time.perf_counter()
                resp = request(client, i)
                elapsed = time.perf_counter() - t
                resp.raise_for_status()
                if i >= WARM_UP:
                    latencies.append(elapsed)
                    counted += count(resp.json())
        return latencies, counted

    def _result(self, queries: int, latencies: list[float], **extra: object) -> dict:
        per_ws_month = self.events / 4 / self.workspaces / 12
        return {"engine": "sqlite", "events": self.events, "workspaces": self.workspaces, "queries": queries,
                "intervals_per_workspace_month": round(per_ws_month, 1), "build_seconds": round(self.build_seconds, 1),
                **extra, "latency_ms": _percentiles(latencies)}

    def usage_query(self, queries: int) -> dict:
        """p50/p99 of ``GET /usage`` for one workspace-month."""

        def request(client: httpx.Client, i: int) -> httpx.Response:
            ws, m = sandbox(i * 7919, self.workspaces, YEAR_START, 1)[0], i % 12
            return client.get(f"/v1/workspaces/{ws}/usage", params={
                "start": format_time(MONTHS[m]), "end": format_time(MONTHS[m + 1]), "as_of": format_time(MONTHS[12])})

        latencies, _ = self._measure(queries, request, lambda doc: len(doc["items"]))
        return self._result(queries, latencies)

    def cost_query(self, queries: int) -> dict:
        """p50/p99 of ``GET /cost`` (the billing period is a month) at an ``as_of`` in the last
        day of a month of 2025: the period's usage so far, nearly a whole workspace-month, as
        the usage query reads it, plus the sandboxes running at ``as_of``."""

        def request(client: httpx.Client, i: int) -> httpx.Response:
            ws, m = sandbox(i * 7919, self.workspaces, YEAR_START, 1)[0], i % 12
            as_of = MONTHS[m + 1] - 1 - (i * 104_729_000_003) % DAY_US
            return client.get(f"/v1/workspaces/{ws}/cost", params={"as_of": format_time(as_of)})

        latencies, running = self._measure(queries, request, lambda doc: doc["running_sandboxes"])
        return self._result(queries, latencies, running_sandboxes_seen=running)


def usage_query(events: int, workspaces: int, queries: int, workdir: Path) -> dict:
    """p50/p99 of ``GET /usage`` for one workspace-month, ``events`` events stored (SQLite)."""
    with ReadStore(events, workspaces, workdir) as store:
        return store.usage_query(queries)


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
