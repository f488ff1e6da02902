"""What a result was measured on: the machine, the date, the commit, how busy the machine was."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_average() -> list[float]:
    """Other work on the machine skews every number: recorded next to each result."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict:
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": _git_commit(),
        "nproc": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "load_average_at_start": load_average(),
    }


RESULTS = ROOT / "bench" / "results"


def save_result(kind: str, results: dict, suffix: str = "") -> str:
    """Write ``results`` (with its ``machine``) to ``bench/results/<kind>-<date><suffix>.json``;
    returns the JSON text."""
    text = json.dumps(results, indent=2, ensure_ascii=False)
    RESULTS.mkdir(exist_ok=True)
    stamp = results["machine"]["date"].replace(":", "").replace("-", "")
    (RESULTS / f"{kind}-{stamp}{suffix}.json").write_text(text)
    return text

