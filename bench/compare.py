"""Before and after in one run: ``.venv/bin/python -m bench.compare --before REV``.

Checks ``REV`` out into a temporary git worktree and runs the same medium-size benchmarks
(usage query on 1,000,000 events, a billing run over 1,000 workspaces, single events at
1,000 requests/s on SQLite) on that tree and on this one, alternating, ``--rounds`` times:
on a shared machine only numbers taken side by side compare.  Each tree runs its own code
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

# Run inside each tree, so it measures that tree's code.
PROBE = """
import json, tempfile
from pathlib import Path
from bench.ingest import single_events
from bench.reads import billing_run, usage_query
work = Path(tempfile.mkdtemp())
single = single_events("sqlite", 10_000, 1_000, work)
print(json.dumps({
    "usage_query_1m_events_ms": usage_query(1_000_000, 100, 300, work)["latency_ms"],
    "billing_run_1k_workspaces_s": billing_run(1_000, 100_000, work)["seconds"],
    "single_event_sqlite": {**single["latency_ms"], "rate": single["achieved_rate"],
                            "server_cpu_ms": single["server_cpu_ms_per_request"]},
}))
"""


def measure(tree: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"benchmarks failed in {tree}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description="the same benchmarks on REV and on this checkout")
    parser.add_argument("--before", required=True, help="a git revision, e.g. a commit before a change")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rev = subprocess.run(["git", "rev-parse", args.before], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    results: dict = {"machine": machine_info(), "before": rev, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="metering-before-") as tmp:
        before = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), rev], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            for i in range(args.rounds):
                row = {"before": measure(before), "after": measure(ROOT)}
                results["rounds"].append(row)
                print(f"round {i + 1}: {json.dumps(row)}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)
    save_result("compare", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
