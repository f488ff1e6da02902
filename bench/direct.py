"""Ingest without HTTP: decode, validate, store and derive, one 10,000-event transaction per batch.

The loop the issue's "before" numbers were taken with, to compare like with like:
``.venv/bin/python -m bench.direct --engine sqlite --batches 5``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.server import fresh_database
from bench.workload import encoded_batches
from metering.db import create_database
from metering.events.service import parse_events, store_batch
from metering.pricing.service import PriceCatalog
from metering.usage.derive import USAGE_DERIVATION
from tests.process import ROOT


async def _loop(url: str, bodies: list[bytes]) -> dict:
    db = create_database(url)
    prices = PriceCatalog.from_file(ROOT / "config/pricing.toml")
    validate = store = 0.0
    events = 0
    try:
        for body in bodies:
            began = time.perf_counter()
            now = time.time_ns() // 1000
            rows = parse_events(body, batch=True, max_events=sys.maxsize, template_known=prices.knows,
                                latest_us=now + 300_000_000, received_us=now)
            parsed = time.perf_counter()
            await store_batch(db, rows, derivation=USAGE_DERIVATION)
            validate += parsed - began
            store += time.perf_counter() - parsed
            events += len(rows)
    finally:
        await db.dispose()
    return {"events": events, "events_per_second": round(events / (validate + store)),
            "validate_us_per_event": round(validate / events * 1e6, 1),
            "store_us_per_event": round(store / events * 1e6, 1)}


def direct(engine: str, n_batches: int, sandboxes_per_batch: int, workdir: Path) -> dict:
    bodies = encoded_batches(n_batches, sandboxes_per_batch, seed=17)
    with fresh_database(engine, workdir) as url:
        result = asyncio.run(_loop(url, bodies))
    result["engine"] = engine
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--sandboxes-per-batch", type=int, default=2_500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(direct(args.engine, args.batches, args.sandboxes_per_batch, Path(tmp))))


if __name__ == "__main__":
    main()
