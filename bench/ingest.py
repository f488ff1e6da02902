"""HTTP ingest against the real server: batched throughput, and single-event latency under load.

The server runs as its own process (``metering serve``), the load comes from another
(``bench.httpload``); the bodies are encoded before the clock starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec

from bench.server import fresh_database, running_server
from bench.workload import batches, encoded_batches
from tests.process import ROOT


def _load(mode: str, url: str, token: str, bodies: list[bytes], counts: list[int], timeout: float,
          **options: object) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".msgpack") as file:
        file.write(msgspec.msgpack.encode([bodies, counts]))
        file.flush()
        argv = [sys.executable, "-m", "bench.httpload", mode, "--url", url, "--token", token,
                "--bodies", file.name, "--timeout", str(timeout)]
        for key, value in options.items():
            argv += [f"--{key}", str(value)]
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout + 60)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux): what a request costs, whatever else runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU so far of the server and of its child processes (the SQLite ingest writer)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {"server": process_cpu_seconds(pid), "writer": sum(process_cpu_seconds(int(c)) for c in children)}


def cpu_per_unit(before: dict[str, float], after: dict[str, float], units: int, scale: float) -> dict[str, float]:
    return {name: round((after[name] - before[name]) / units * scale, 3) for name in before}


def batched(engine: str, n_batches: int, sandboxes_per_batch: int, workdir: Path, concurrency: int = 2) -> dict:
    """``n_batches`` batches of ``4 * sandboxes_per_batch`` new events, ``concurrency`` in flight."""
    bodies = encoded_batches(n_batches, sandboxes_per_batch, seed=11)
    warmup = encoded_batches(1, max(1, sandboxes_per_batch // 10), seed=12, prefix="warm")
    with fresh_database(engine, workdir) as url, running_server(url, workdir / f"ingest-{engine}.log") as (srv, tok):
        _load("batches", srv.url, tok, warmup, [4 * max(1, sandboxes_per_batch // 10)], 300, concurrency=1)
        cpu_before = service_cpu_seconds(srv.proc.pid)
        result = _load("batches", srv.url, tok, bodies, [4 * sandboxes_per_batch] * n_batches, 900,
                       concurrency=concurrency)
        cpu = cpu_per_unit(cpu_before, service_cpu_seconds(srv.proc.pid), n_batches * 4 * sandboxes_per_batch, 1e6)
        result["server_cpu_us_per_event"], result["writer_cpu_us_per_event"] = cpu["server"], cpu["writer"]
    result.update(engine=engine, batch_events=4 * sandboxes_per_batch, concurrency=concurrency)
    return result


def single_events(engine: str, requests: int, rate: float, workdir: Path, *, admin_token: bool = False) -> dict:
    """One event per POST at ``rate`` requests/s, open loop, for ``requests`` requests.

    ``admin_token``: authenticate with the environment's admin token (no database lookup),
    to split the token lookup's cost from the rest.
    """
    events = [e for batch in batches(1, (requests + 3) // 4, seed=13, prefix="one") for e in batch][:requests]
    bodies = [msgspec.json.encode(e) for e in events]
    warmup = [msgspec.json.encode(e) for b in batches(1, 25, seed=14, prefix="warmone") for e in b]
    log = workdir / f"single-{engine}.log"
    with fresh_database(engine, workdir) as url, running_server(url, log, admin_only=admin_token) as (srv, tok):
        _load("rate", srv.url, tok, warmup, [1] * len(warmup), 120, rate=min(rate, 200))
        cpu_before = service_cpu_seconds(srv.proc.pid)
        result = _load("rate", srv.url, tok, bodies, [1] * len(bodies), requests / rate + 120, rate=rate)
        cpu = cpu_per_unit(cpu_before, service_cpu_seconds(srv.proc.pid), len(bodies), 1000)
        result["server_cpu_ms_per_request"], result["writer_cpu_ms_per_request"] = cpu["server"], cpu["writer"]
    result.update(engine=engine, token="admin (no lookup)" if admin_token else "service token")
    return result
