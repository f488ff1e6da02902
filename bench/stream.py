"""Events from the NATS JetStream stream next to HTTP batches of the same size, both engines.

    .venv/bin/python -m bench.stream [--batches 20] [--sandboxes 250] [--engines sqlite,postgresql]

One real server per engine (``metering serve``, scheduler off, ``[ingest.nats]`` on a stream of
its own).  The stream is filled before the server starts, so the consumer finds a backlog
(publishing here is slower than consuming); its rate is taken from the events' ``received_at``
stamps from the second batch on (``_stream_rate``).  Then the same number of other events goes
over HTTP in batches of the same size (bench.httpload, 2 in flight), to the server the stream
has warmed up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from bench.httpload import run_batches
from bench.server import ENGINES, fresh_database, running_server
from bench.workload import batches, encoded_batches
from metering.db import create_database
from tests.stream.nats_helpers import drop, ensure_stream, env_for, pending, publish, unique_config


async def _stream_rate(url: str, cfg) -> dict:
    """Events per second from the second batch on: the first pays for what starts lazily (on
    SQLite the writer process).  Every event of a batch has the batch's ``received_at``, so
    the stamps tell the batches apart; batches 2..n-1 were written between the 2nd and the last."""
    deadline = time.monotonic() + 900
    while await pending(cfg) != (0, 0):
        if time.monotonic() > deadline:
            raise RuntimeError("the stream was not consumed in 15 minutes")
        await asyncio.sleep(0.5)
    db = create_database(url)
    try:
        async with db.read() as session:
            stamps = (await session.execute(text(
                "SELECT received_at, count(*) FROM events WHERE event_id LIKE 'evt_st_%' "
                "GROUP BY received_at ORDER BY received_at"))).all()
    finally:
        await db.dispose()
    middle = sum(n for _, n in stamps[1:-1])
    seconds = (stamps[-1][0] - stamps[1][0]) / 1e6
    return {"events": sum(n for _, n in stamps), "batches": len(stamps), "measured_events": middle,
            "seconds": round(seconds, 3), "events_per_second": round(middle / seconds)}


def measure(engine: str, n_batches: int, sandboxes: int, workdir: Path) -> dict:
    cfg = unique_config(batch_size=4 * sandboxes)
    stream_events = [ev for batch in batches(n_batches, sandboxes, seed=21, prefix="st") for ev in batch]
    http_bodies = encoded_batches(n_batches, sandboxes, seed=22, prefix="ht")
    asyncio.run(ensure_stream(cfg))
    asyncio.run(publish(cfg, [(json.dumps(ev).encode(), None) for ev in stream_events]))
    os.environ.update(env_for(cfg))  # the server process inherits the [ingest.nats] settings
    try:
        with fresh_database(engine, workdir) as url, running_server(url, workdir / f"stream-{engine}.log") as (srv, tok):
            stream = asyncio.run(_stream_rate(url, cfg))
            http = asyncio.run(run_batches(srv.url, tok, http_bodies, [4 * sandboxes] * n_batches, 2, 900))
    finally:
        for name in env_for(cfg):
            os.environ.pop(name, None)
        asyncio.run(drop(cfg))
    return {"engine": engine, "batch_events": 4 * sandboxes, "stream": stream,
            "http": {k: http[k] for k in ("events", "seconds", "events_per_second", "error_count")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--sandboxes", type=int, default=250, help="per batch; 4 events each")
    parser.add_argument("--engines", default=",".join(ENGINES))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="metering-bench-stream-"))
    for engine in args.engines.split(","):
        print(json.dumps(measure(engine, args.batches, args.sandboxes, workdir)), flush=True)


if __name__ == "__main__":
    main()
