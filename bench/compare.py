"""Before and after in one run: ``.venv/bin/python -m bench.compare --before REV``.

Checks ``REV`` out into a temporary git worktree and runs the same medium-size benchmarks
(``--only``; by default usage query on 1,000,000 events, a billing run over 1,000
workspaces, single events at 1,000 requests/s on SQLite; ``single_pg`` adds them on
PostgreSQL, ``ingest`` / ``ingest_pg`` batched HTTP ingest of 200,000 events on SQLite /
PostgreSQL) on that tree and on this one, alternating, ``--rounds`` times: on a shared
machine only numbers taken side by side compare.  Each tree runs its own code
(``PYTHONPATH``) with this checkout's virtualenv; REV must have the ``bench.reads`` and
``bench.ingest`` functions used here.  Writes ``bench/results/compare-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.machine import ROOT, machine_info, save_result

# Run inside each tree, so it measures that tree's code; argv[1] names the benchmarks.
PROBE = """
import json, sys, tempfile
from pathlib import Path
from bench.ingest import batched, single_events
from bench.reads import billing_run, usage_query
work = Path(tempfile.mkdtemp())
out = {}
for name in sys.argv[1].split(","):
    if name == "usage":
        out["usage_query_1m_events_ms"] = usage_query(1_000_000, 100, 300, work)["latency_ms"]
    elif name == "billing":
        out["billing_run_1k_workspaces_s"] = billing_run(1_000, 100_000, work)["seconds"]
    elif name in ("single", "single_pg"):
        engine = "sqlite" if name == "single" else "postgresql"
        single = single_events(engine, 10_000, 1_000, work)
        out[f"single_event_{engine}"] = {**single["latency_ms"], "rate": single["achieved_rate"],
                                         "server_cpu_ms": single["server_cpu_ms_per_request"],
                                         "writer_cpu_ms": single.get("writer_cpu_ms_per_request", 0)}
    elif name in ("ingest", "ingest_pg"):
        engine = "sqlite" if name == "ingest" else "postgresql"
        run = batched(engine, 20, 2_500, work)
        out[f"batched_ingest_{engine}"] = {"events_per_second": run["events_per_second"],
                                           "server_cpu_us": run["server_cpu_us_per_event"],
                                           "writer_cpu_us": run.get("writer_cpu_us_per_event", 0)}
print(json.dumps(out))
"""
BENCHMARKS = ("usage", "billing", "single", "single_pg", "ingest", "ingest_pg")


def measure(tree: Path, only: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, only], cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"benchmarks failed in {tree}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description="the same benchmarks on REV and on this checkout")
    parser.add_argument("--before", required=True, help="a git revision, e.g. a commit before a change")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="usage,billing,single", help=f"comma list of {', '.join(BENCHMARKS)}")
    args = parser.parse_args()
    if unknown := set(args.only.split(",")) - set(BENCHMARKS):
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    rev = subprocess.run(["git", "rev-parse", args.before], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    results: dict = {"machine": machine_info(), "before": rev, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="metering-before-") as tmp:
        before = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), rev], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            for i in range(args.rounds):
                row = {"before": measure(before, args.only), "after": measure(ROOT, args.only)}
                results["rounds"].append(row)
                print(f"round {i + 1}: {json.dumps(row)}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)
    save_result("compare", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
