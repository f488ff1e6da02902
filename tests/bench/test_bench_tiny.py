"""The benchmarks, at tiny sizes: they must keep running.  Timings are not asserted (CI machines
are shared and noisy); what is asserted is that each benchmark did the work it reports."""

import pytest

from bench import run as bench_run
from tests.conftest import ENGINES

pytestmark = pytest.mark.slow


def test_tiny_benchmarks_run(tmp_path):
    results = bench_run.run("tiny", ENGINES, None, tmp_path)
    r = results["results"]
    assert not {name: out["error"] for name, out in r.items() if "error" in out}
    machine = results["machine"]
    assert machine["nproc"] >= 1 and machine["cpu"] and machine["date"] and machine["commit"]

    p = bench_run.SIZES["tiny"]
    events = p["batches"] * p["sandboxes_per_batch"] * 4
    for engine in ENGINES:
        ingest = r[f"ingest_{engine}"]
        assert ingest["accepted"] == ingest["events"] == events
        assert ingest["error_count"] == 0
        # CPU is read in clock ticks (10 ms): a tiny run may well take none.
        assert ingest["server_cpu_us_per_event"] >= 0 and ingest["writer_cpu_us_per_event"] >= 0
        single = r[f"single_event_{engine}"]
        assert single["requests"] == p["single_requests"] and single["error_count"] == 0
        assert single["latency_ms"]["p99"] >= single["latency_ms"]["p50"] > 0
    if "sqlite" in ENGINES:
        assert r["ingest_sqlite"]["ratio_to_floor"] > 0
    assert r[f"single_event_{ENGINES[0]}_admin_token"]["error_count"] == 0
    assert r["floor_before"]["events"] == r["floor_after"]["events"] == events
    assert r["usage_query"]["latency_ms"]["p99"] > 0
    # The cost query runs on the usage query's store (built once).
    cost = r["cost_query"]
    assert cost["latency_ms"]["p99"] > 0 and cost["queries"] == p["usage_queries"]
    assert cost["build_seconds"] == r["usage_query"]["build_seconds"]
    assert "2026-01-01T00:00:00Z" in r["billing_run"]["output"]
    assert f"{p['billing_workspaces']} invoices" in r["billing_run"]["output"]
    for engine in ENGINES:
        exported = r[f"export_{engine}"]
        assert exported["floor_before"]["rows"] == exported["rows"] == p["export_rows"]
        assert exported["exports"]["csv"]["rows_per_second"] > 0 and exported["exports"]["csv"]["ratio_to_floor"] > 0
    assert "summary" not in r and bench_run.summary(results).count("\n") == len(r)


def test_tiny_matrix_runs(tmp_path):
    """bench.matrix at tiny sizes: every cell stores every event it sends, beside its floor."""
    from bench import matrix

    results = matrix.run("tiny", ENGINES, tmp_path)
    cells = results["cells"]
    assert {(c["engine"], c["batch"]) for c in cells} == {(e, b) for e in ENGINES for b in matrix.CELLS["tiny"]}
    for c in cells:
        assert c["error_count"] == 0 and c["accepted"] == c["events"] > 0, c
        assert c["floor_events_per_second"] > 0 and c["ratio_to_floor"] > 0
    for engine in ENGINES:
        h = results["history"][engine]
        assert h["new"] > 0 and h["with_history"] > 0 and h["ratio"] > 0
    assert matrix.summary(results).count("\n") == len(cells) + len(ENGINES)


def test_commit_pages_maps_a_commit_to_its_tables(tmp_path):
    """bench.commit_pages at a tiny size: the last commit's pages are found in the WAL and
    each belongs to a table or index of the store."""
    from bench import commit_pages

    out = commit_pages.measure(commit_pages.requests(4_000), 2, tmp_path)
    last = out["last_commit"]
    assert out["events"] == 2_000 and last["events"] == 2_000 and out["events_per_second"] > 0
    assert last["pages"] == sum(last["by_table"].values()) > 0
    assert {"events", "sqlite_autoindex_events_1", "sandbox_states"} <= set(last["by_table"])
