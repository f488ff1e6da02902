"""Large stores for the read-side benchmarks, written straight into SQLite (no HTTP, no ingest).

Loading ten million events through the API would measure ingest again and take minutes;
these builders write the same rows ingest would write, with sqlite3 ``executemany`` in big
transactions: each sandbox's four events (bench.workload's shape), its running interval cut
at month boundaries (usage.derive.month_pieces) and its extension.  Every row is a pure
function of the sandbox number, so a store is rebuilt identically from its parameters.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone

from metering.core.timeutil import to_us
from metering.usage.derive import month_pieces

TEMPLATES = ("giga-mini", "giga-standard", "giga-pro", "giga-max", "linux-toolkit-standard")
SECOND = 1_000_000
HOUR = 3600 * SECOND
YEAR_START = to_us(datetime(2025, 1, 1, tzinfo=timezone.utc))
YEAR_US = 365 * 24 * HOUR
CHUNK = 20_000

EVENT_SQL = ("INSERT INTO events (source, event_id, type, time, workspace_id, deployment_id, sandbox_id, run_id, "
             "template, minutes, body_hash, payload, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")
INTERVAL_SQL = ('INSERT INTO usage_intervals (workspace_id, deployment_id, sandbox_id, template, start, "end") '
                "VALUES (?,?,?,?,?,?)")
EXTENSION_SQL = ("INSERT INTO usage_extensions (workspace_id, deployment_id, sandbox_id, template, time, count) "
                 "VALUES (?,?,?,?,?,?)")
TYPES = ("sandbox.provisioning", "sandbox.running", "sandbox.extended", "sandbox.stopped")


def _mix(n: int) -> int:
    """A cheap deterministic scramble (splitmix64's finalizer)."""
    n = (n + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    n = ((n ^ (n >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    n = ((n ^ (n >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return n ^ (n >> 31)


def sandbox(n: int, workspaces: int, span_start: int, span_us: int) -> tuple:
    """Sandbox ``n``: (workspace, deployment, sandbox id, template, provisioned, running, stopped)."""
    r = _mix(n)
    ws = f"ws_{r % workspaces:05d}"
    start = span_start + (r >> 20) % span_us
    running = start + 30 * SECOND
    stop = running + (60 + (r >> 8) % (4 * 3600)) * SECOND
    return ws, f"dep_{n % 7}", f"sb_{n:09d}", TEMPLATES[(r >> 4) % len(TEMPLATES)], start, running, stop


def _event_rows(s: tuple) -> list[tuple]:
    ws, dep, sb, template, start, running, stop = s
    times = (start, running, running + 60 * SECOND, stop)
    rows = []
    for i, (type_, t) in enumerate(zip(TYPES, times)):
        payload = f'{{"id":"evt_{sb}_{i}","source":"/platform/sandboxes","type":"{type_}","sandbox":"{sb}"}}'
        rows.append(("/platform/sandboxes", f"evt_{sb}_{i}", type_, t, ws, dep, sb, None,
                     None if type_ == "sandbox.stopped" else template, 15 if i == 2 else None,
                     hashlib.sha256(payload.encode()).hexdigest(), payload, stop))
    return rows


def _chunks(count: int) -> Iterator[range]:
    for lo in range(0, count, CHUNK):
        yield range(lo, min(count, lo + CHUNK))


def build_usage_store(path: str, *, sandboxes: int, workspaces: int, with_events: bool = True,
                      span_start: int = YEAR_START, span_us: int = YEAR_US) -> None:
    """``sandboxes`` short-lived sandboxes over a year: 4 events, 1 interval, 1 extension each."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # a bulk load, rebuilt from scratch if interrupted
    conn.execute("PRAGMA cache_size=-262144")
    try:
        for numbers in _chunks(sandboxes):
            boxes = [sandbox(n, workspaces, span_start, span_us) for n in numbers]
            conn.execute("BEGIN")
            if with_events:
                conn.executemany(EVENT_SQL, [row for s in boxes for row in _event_rows(s)])
            conn.executemany(INTERVAL_SQL, [(ws, dep, sb, tpl, a, b) for ws, dep, sb, tpl, _, run, stop in boxes
                                            for a, b in month_pieces(run, stop)])
            conn.executemany(EXTENSION_SQL, [(ws, dep, sb, tpl, run + 60 * SECOND, 1)
                                             for ws, dep, sb, tpl, _, run, _ in boxes])
            conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
