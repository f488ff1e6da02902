"""Run the benchmarks: ``.venv/bin/python -m bench.run --size full|tiny``.

Writes ``bench/results/<size>-<date>.json`` (and ``latest-<size>.json``) with the machine,
the date, the commit, every measurement and its target, and prints a summary table.
``tiny`` runs everything on small sizes in well under a minute (CI keeps the scripts
working with it; its timings mean nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import direct, export, floor, ingest, reads
from bench.machine import RESULTS, load_average, machine_info, save_result
from bench.server import ENGINES
from bench.workload import encoded_batches


# name: (full, tiny) parameters
SIZES = {
    "full": {"batches": 20, "sandboxes_per_batch": 2_500, "single_requests": 10_000, "single_rate": 1_000,
             "usage_events": 10_000_000, "usage_workspaces": 1_000, "usage_queries": 500,
             "billing_workspaces": 10_000, "billing_intervals": 1_000_000, "export_rows": 1_000_000},
    "tiny": {"batches": 2, "sandboxes_per_batch": 25, "single_requests": 40, "single_rate": 100,
             "usage_events": 4_000, "usage_workspaces": 10, "usage_queries": 10,
             "billing_workspaces": 10, "billing_intervals": 200, "export_rows": 1_000},
}
TARGETS = {
    "ingest_sqlite": "≥ 50,000 events/s and ≥ 40% of the floor",
    "ingest_postgresql": "≥ 20,000 events/s",
    "single_event": "p99 < 10 ms at 1,000 requests/s",
    "usage_query": "p99 < 20 ms, 10,000,000 events stored",
    "cost_query": "p99 < 20 ms, 10,000,000 events stored",
    "billing_run": "< 60 s for 10,000 workspaces, 1,000,000 intervals",
    "export": "≥ 150,000 rows/s for a 1,000,000-row CSV usage export, flat RSS",
}


def _step(name: str, results: dict, fn: Callable[[], dict]) -> None:
    print(f"-- {name} ...", flush=True)
    began = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001 - one failing benchmark must not hide the others
        out = {"error": f"{type(exc).__name__}: {exc}"}
    out["load_average"] = load_average()
    out["wall_seconds"] = round(time.perf_counter() - began, 1)
    results[name] = out
    print(f"   {json.dumps(out)[:400]}", flush=True)


def run(size: str, engines: list[str], only: set[str] | None, workdir: Path) -> dict:
    p = SIZES[size]
    results: dict = {"size": size, "machine": machine_info(), "targets": TARGETS, "results": {}}
    r = results["results"]

    def want(name: str) -> bool:
        return only is None or name in only

    bodies = encoded_batches(p["batches"], p["sandboxes_per_batch"], seed=11)
    if want("ingest"):
        # The floor before and after the service, so a change in the machine's load shows.
        _step("floor_before", r, lambda: floor.measure(bodies, workdir=workdir))
        for engine in engines:
            _step(f"ingest_{engine}", r, lambda e=engine: ingest.batched(e, p["batches"], p["sandboxes_per_batch"],
                                                                          workdir))
        for engine in engines:  # the "before" was measured this way: compare like with like
            _step(f"direct_{engine}", r, lambda e=engine: direct.direct(e, min(5, p["batches"]),
                                                                        p["sandboxes_per_batch"], workdir))
        _step("floor_after", r, lambda: floor.measure(bodies, workdir=workdir))
        _step("floor_indexed", r, lambda: floor.measure(bodies, indexed=True, workdir=workdir))
        floors = [r[k]["events_per_second"] for k in ("floor_before", "floor_after") if "events_per_second" in r[k]]
        got = r.get("ingest_sqlite", {}).get("events_per_second")
        if floors and got:  # the floor is SQLite's: a ratio for SQLite only
            r["ingest_sqlite"]["ratio_to_floor"] = round(got / max(floors), 3)
            r["ingest_sqlite"]["ratio_to_floor_before"] = round(got / floors[0], 3)
    if want("single"):
        for engine in engines:
            _step(f"single_event_{engine}", r,
                  lambda e=engine: ingest.single_events(e, p["single_requests"], p["single_rate"], workdir))
        # Diagnostic: the same with the admin token, checked without a database lookup.
        _step(f"single_event_{engines[0]}_admin_token", r, lambda: ingest.single_events(
            engines[0], p["single_requests"], p["single_rate"], workdir, admin_token=True))
    if want("usage"):
        # One store for both queries: building it is most of the time at full size.
        with reads.ReadStore(p["usage_events"], p["usage_workspaces"], workdir) as store:
            _step("usage_query", r, lambda: store.usage_query(p["usage_queries"]))
            _step("cost_query", r, lambda: store.cost_query(p["usage_queries"]))
    if want("billing"):
        _step("billing_run", r, lambda: reads.billing_run(p["billing_workspaces"], p["billing_intervals"], workdir))
    if want("export"):
        for engine in engines:  # the CSV usage export over HTTP, beside the raw driver's read (bench/export.py)
            _step(f"export_{engine}", r, lambda e=engine: export.measure(e, p["export_rows"], ["csv"]))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description="metering benchmarks")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma list of sqlite, postgresql")
    parser.add_argument("--only", default=None, help="comma list of ingest, single, usage (the usage and cost queries), billing, export")
    parser.add_argument("--workdir", default=None, help="where the databases go (default: a temporary directory)")
    parser.add_argument("--no-save", action="store_true", help="print only, write no results file")
    args = parser.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    only = set(args.only.split(",")) if args.only else None
    with tempfile.TemporaryDirectory(prefix="metering-bench-") as tmp:
        results = run(args.size, engines, only, Path(args.workdir or tmp))
    if not args.no_save:
        text = save_result(args.size, results, f"-{args.only.replace(',', '-')}" if only else "")
        if only is None:  # a partial run does not replace the last complete one
            (RESULTS / f"latest-{args.size}.json").write_text(text)
    print(summary(results))
    failed = [k for k, v in results["results"].items() if "error" in v]
    return 1 if failed else 0


def summary(results: dict) -> str:
    m = results["machine"]
    lines = [f"{results['size']} run, {m['date']}, commit {m['commit'][:12]}, {m['nproc']} CPUs ({m['cpu']}), "
             f"{m['memory_gib']} GiB, load {m['load_average_at_start']}"]
    for name, out in results["results"].items():
        if "error" in out:
            lines.append(f"  {name:24s} ERROR {out['error']}")
        elif "events_per_second" in out:
            ratio = f", {out['ratio_to_floor'] * 100:.0f}% of the floor" if "ratio_to_floor" in out else ""
            cpu = (f", server CPU {out['server_cpu_us_per_event']} µs/event"
                   f" + writer {out.get('writer_cpu_us_per_event', 0)}" if "server_cpu_us_per_event" in out else "")
            lines.append(f"  {name:24s} {out['events_per_second']:>8,} events/s{ratio}{cpu}")
        elif "latency_ms" in out:
            lat = out["latency_ms"]
            rate = f" at {out['achieved_rate']} req/s" if "achieved_rate" in out else ""
            cpu = (f", server CPU {out['server_cpu_ms_per_request']} ms/request"
                   f" + writer {out.get('writer_cpu_ms_per_request', 0)}" if "server_cpu_ms_per_request" in out else "")
            lines.append(f"  {name:24s} p50 {lat['p50']} ms, p99 {lat['p99']} ms{rate}{cpu}")
        elif "seconds" in out:
            lines.append(f"  {name:24s} {out['seconds']} s")
        elif "exports" in out:
            csv = out["exports"]["csv"]
            lines.append(f"  {name:24s} {csv['rows_per_second']:>8,} rows/s, {csv['ratio_to_floor'] * 100:.0f}% of the "
                         f"floor, RSS +{csv['rss_growth_mib']} MiB")
        elif "output" in out:
            lines.append(f"  {name:24s} {out['output'][-1] if out['output'] else out}")
        else:
            lines.append(f"  {name:24s} {json.dumps(out)[:200]}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
