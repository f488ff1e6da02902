"""Large usage tables made by the database itself, and a process's memory as Linux reports it.

Shared by the memory test and ``bench/export.py``.  Rows are generated with one
``INSERT ... SELECT`` over a recursive counter (SQLite and PostgreSQL alike): nothing is
built in Python, so a million rows take seconds.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import text

from metering.db import Database

JAN_2026 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
STEP_US = 2_000_000  # one interval start every 2 s: a million rows fit in January
TEMPLATES = "CASE i % 5 WHEN 0 THEN 'giga-mini' WHEN 1 THEN 'giga-standard' WHEN 2 THEN 'giga-pro' " \
            "WHEN 3 THEN 'giga-max' ELSE 'linux-toolkit-standard' END"


def _counter(count: int) -> str:
    # Values are ours and inlined as integers: no bind-parameter typing differences.
    return f"WITH RECURSIVE n(i) AS (SELECT CAST(0 AS BIGINT) UNION ALL SELECT i + 1 FROM n WHERE i < {count - 1}) "


async def fill_usage(db: Database, intervals: int, extensions: int) -> None:
    """``intervals`` closed 30-minute running intervals and ``extensions`` extension rows in
    January 2026, over 50 workspaces and 7 deployments."""
    common = "'ws_' || CAST(i % 50 AS VARCHAR), 'dep_' || CAST(i % 7 AS VARCHAR), 'sb_' || CAST(i AS VARCHAR)"
    async with db.write() as session:
        if intervals:
            await session.execute(text(
                _counter(intervals) + "INSERT INTO usage_intervals "
                '(workspace_id, deployment_id, sandbox_id, template, start, "end") '
                f"SELECT {common}, {TEMPLATES}, {JAN_2026} + i * {STEP_US}, {JAN_2026} + i * {STEP_US} + 1800000000 "
                "FROM n"))
        if extensions:
            await session.execute(text(
                _counter(extensions) + "INSERT INTO usage_extensions "
                "(workspace_id, deployment_id, sandbox_id, template, time, count) "
                f"SELECT {common}, {TEMPLATES}, {JAN_2026} + i * {STEP_US} + 600000000, 1 + i % 4 FROM n"))


def status_kb(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` memory line (VmRSS, VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakRss:
    """The peak RSS of a process over a block: VmHWM after a reset, and sampled VmRSS
    every 5 ms as a cross-check where the reset is not allowed."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base_kb = self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS"))

    def __enter__(self) -> PeakRss:
        self.hwm_reset = reset_peak(self.pid)
        self.base_kb = self.peak_kb = status_kb(self.pid, "VmRSS")
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.hwm_reset:
            self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmHWM"))

    @property
    def growth_kb(self) -> int:
        return self.peak_kb - self.base_kb
