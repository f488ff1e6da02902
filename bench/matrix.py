"""The ingest workload matrix (issue 18): ``.venv/bin/python -m bench.matrix --size full``.

Each cell is a fresh database and the real server fed by ``bench.httpload`` with the callers'
stream (bench.callers: half long-lived sandboxes spread over many batches, half short lives,
1% of the long ones' events late) at one batch size and one client count.  Beside each cell
the floor at the same batch size is measured in the same run, just before it (SQLite:
bench.floor, one transaction per batch; PostgreSQL: bench.floor.measure_pg), and the cell is
reported as a ratio to it: machines here are noisy, ratios taken minutes apart are not.

``history`` is the other question: does an event cost more when its sandbox has a long
history?  The same in-order batches are sent once for new sandboxes and once for sandboxes
that already have ``--history`` events each (loaded before the clock starts).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench import floor
from bench.callers import QUARTER, caller_batches, encoded, long_life
from bench.ingest import _load, cpu_per_unit, service_cpu_seconds
from bench.machine import load_average, machine_info, save_result
from bench.server import ENGINES, fresh_database, running_server
from bench.workload import SECOND, TEMPLATES

# batch size: (clients, events in the cell) per size
CELLS = {
    "full": {1: ((1, 3_000), (8, 6_000)), 10: ((1, 10_000), (8, 20_000)), 100: ((1, 40_000), (8, 60_000)),
             1_000: ((1, 60_000), (4, 100_000)), 10_000: ((1, 100_000), (2, 150_000))},
    "tiny": {10: ((2, 200),), 1_000: ((2, 2_000),)},  # CI: the scripts keep working, quickly
}
HISTORY = {"full": {"sandboxes": 1_000, "history": 1_000, "batches": 20}, "tiny": {"sandboxes": 10, "history": 40, "batches": 2}}


def cell(engine: str, batch: int, clients: int, total: int, workdir: Path) -> dict:
    bodies, counts = encoded(caller_batches(total, batch, seed=batch * 31 + clients))
    floor_out = (floor.measure(bodies, tx_rows=batch, workdir=workdir) if engine == "sqlite"
                 else floor.measure_pg(bodies, tx_rows=batch))
    with fresh_database(engine, workdir) as url, running_server(url, workdir / f"matrix-{engine}.log") as (srv, tok):
        warm_bodies, warm_counts = encoded(caller_batches(200, min(batch, 100), seed=5, prefix="w"))
        _load("batches", srv.url, tok, warm_bodies, warm_counts, 300, concurrency=1)
        before = service_cpu_seconds(srv.proc.pid)
        out = _load("batches", srv.url, tok, bodies, counts, 1200, concurrency=clients)
        cpu = cpu_per_unit(before, service_cpu_seconds(srv.proc.pid), sum(counts), 1e6)
    return {"engine": engine, "batch": batch, "clients": clients, "events": out["events"],
            "accepted": out["accepted"], "error_count": out["error_count"], "errors": out["errors"],
            "events_per_second": out["events_per_second"], "floor_events_per_second": floor_out["events_per_second"],
            "ratio_to_floor": round(out["events_per_second"] / floor_out["events_per_second"], 3),
            "batch_latency_ms": out["batch_latency_ms"], "cpu_us_per_event": cpu, "load_average": load_average()}


def _life_batches(sandboxes: int, skip: int, events_each: int, per_batch: int, suffix: str,
                  start_us: int) -> list[list[dict]]:
    """Events ``skip`` to ``skip + events_each`` of each long sandbox, round-robin, in batches.

    Sandbox ``i`` is ``H<i><suffix>``: a new sandbox's keys (its events' ids, its state and
    history rows) sit beside those of the old sandbox ``H<i>`` in every index, so both kinds
    write to the same parts of the same b-trees and only the history differs.
    """
    lives = [list(long_life(f"ws_{i % 100:05d}", f"H{i:06d}{suffix}", start_us + i * SECOND,
                            skip + events_each + 1, TEMPLATES[i % len(TEMPLATES)]))[skip:skip + events_each]
             for i in range(sandboxes)]
    flat = [life[k] for k in range(events_each) for life in lives]
    return [flat[i:i + per_batch] for i in range(0, len(flat), per_batch)]


def history(engine: str, sandboxes: int, history_len: int, batches: int, workdir: Path) -> dict:
    """Events/s of in-order batches for sandboxes with no history and with ``history_len`` events each."""
    per_batch = 1_000
    events_each = max(1, batches * per_batch // sandboxes)
    out: dict = {"engine": engine, "sandboxes": sandboxes, "history": history_len, "events_each": events_each}
    # Recent times, as in bench.callers: every life, history included, ends before now.
    start_us = (time.time_ns() // 1000 - (history_len + 2 * events_each + 2) * QUARTER - sandboxes * SECOND)
    start_us -= start_us % SECOND
    with fresh_database(engine, workdir) as url, running_server(url, workdir / f"history-{engine}.log") as (srv, tok):
        old = _life_batches(sandboxes, 0, history_len, 10_000, "", start_us)  # loaded, not timed
        _load("batches", srv.url, tok, *encoded(old), 3600, concurrency=2)
        # Alternate the two kinds so that a change in the machine's load hits both alike.
        runs = {"new": [], "with_history": []}
        for rnd in range(2):
            for kind, (skip, suffix) in (("new", (0, f"n{rnd}")), ("with_history", (history_len + rnd * events_each, ""))):
                bodies, counts = encoded(_life_batches(sandboxes, skip, events_each, per_batch, suffix, start_us))
                began = time.perf_counter()
                res = _load("batches", srv.url, tok, bodies, counts, 1200, concurrency=2)
                assert res["error_count"] == 0, res["errors"]
                runs[kind].append(round(sum(counts) / (time.perf_counter() - began)))
    out.update({k: max(v) for k, v in runs.items()}, runs=runs)
    out["ratio"] = round(out["with_history"] / out["new"], 3)
    return out


def run(size: str, engines: list[str], workdir: Path, only: set[str] | None = None) -> dict:
    results: dict = {"size": size, "machine": machine_info(), "cells": [], "history": {}}
    for engine in engines:
        if only is None or "matrix" in only:
            for batch, shapes in CELLS[size].items():
                for clients, total in shapes:
                    print(f"-- {engine} batch {batch} x {clients} clients ...", flush=True)
                    out = cell(engine, batch, clients, total, workdir)
                    print(f"   {json.dumps(out)[:300]}", flush=True)
                    results["cells"].append(out)
        if only is None or "history" in only:
            h = HISTORY[size]
            print(f"-- {engine} history ...", flush=True)
            results["history"][engine] = history(engine, h["sandboxes"], h["history"], h["batches"], workdir)
            print(f"   {json.dumps(results['history'][engine])}", flush=True)
    return results


def summary(results: dict) -> str:
    m = results["machine"]
    lines = [f"{results['size']} matrix, {m['date']}, commit {m['commit'][:12]}, {m['nproc']} CPUs ({m['cpu']})"]
    for c in results["cells"]:
        lines.append(f"  {c['engine']:10s} {c['batch']:>6,} x {c['clients']}  {c['events_per_second']:>8,} events/s"
                     f"  floor {c['floor_events_per_second']:>8,}  {c['ratio_to_floor'] * 100:5.0f}%"
                     f"  errors {c['error_count']}")
    for engine, h in results["history"].items():
        lines.append(f"  {engine:10s} history {h['history']}: new {h['new']:,}, with history {h['with_history']:,}"
                     f" events/s ({h['ratio'] * 100:.0f}%)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="the ingest workload matrix")
    parser.add_argument("--size", choices=sorted(CELLS), default="tiny")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--only", default=None, help="matrix, history")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    with tempfile.TemporaryDirectory(prefix="metering-matrix-") as tmp:
        results = run(args.size, [e for e in args.engines.split(",") if e], Path(tmp), only)
    if not args.no_save:
        save_result(f"matrix-{args.size}", results, "")
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
