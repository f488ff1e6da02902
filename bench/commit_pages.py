"""What one SQLite ingest commit writes, by table, and what the group size does to it.

``.venv/bin/python -m bench.commit_pages [--events 100000] [--request 1000] [--groups 1,2,4]``

The ingest writer alone (db.sqlite_writer and events.service.write_group, as the writer
process runs them, no HTTP): the callers' stream (bench.callers) in `--request`-event requests,
``g`` requests per transaction as group commit makes them.  For each ``g``: events/s and the
writer's CPU per event over the whole run, then one more transaction on the grown store with
the WAL emptied just before, whose WAL frames are mapped to the tables and indexes they
belong to (SQLite's ``dbstat``).  A commit writes every page it dirtied, and a page that
several requests' rows land on is written once per commit: the per-commit part of the cost.
"""

from __future__ import annotations

import argparse
import collections
import pickle
import resource
import sqlite3
import struct
import tempfile
import time
from functools import partial
from pathlib import Path

from bench.callers import caller_batches, encoded
from bench.machine import machine_info, save_result
from bench.server import fresh_database
from metering.db.sqlite_writer import SqliteWriter
from metering.events.service import Prepared, parse_events, prepare, write_group
from metering.usage.derive import USAGE_DERIVATION

REQUEST = 1_000
WAL_HEADER, FRAME_HEADER = 32, 24


def requests(total: int, size: int = REQUEST) -> list[Prepared]:
    bodies, _ = encoded(caller_batches(total, size, seed=size * 31 + 4))
    now = time.time_ns() // 1000
    made = [prepare(parse_events(body, batch=True, max_events=size, template_known=lambda *_: True,
                                 latest_us=now + 300_000_000, received_us=now)) for body in bodies]
    return [r for r in made if len(r.rows) == size]  # the stream's short last request left out


def wal_pages(path: str, page_size: int) -> set[int]:
    data = Path(path + "-wal").read_bytes()
    return {struct.unpack_from(">I", data, off)[0]
            for off in range(WAL_HEADER, len(data) - FRAME_HEADER + 1, FRAME_HEADER + page_size)}


def measure(batches: list[Prepared], group: int, workdir: Path) -> dict:
    # As the writer process gets them: pickled (rows as msgpack, see Prepared.__reduce__).
    groups = [batches[i:i + group] for i in range(0, len(batches) - group + 1, group)]  # whole groups
    sent = [pickle.dumps(partial(write_group, batches=g, derivation=USAGE_DERIVATION)) for g in groups]
    *timed, last = sent
    events = sum(len(b.rows) for g in groups[:-1] for b in g)
    with fresh_database("sqlite", workdir) as url:
        path = url.split("///", 1)[1]
        writer = SqliteWriter(path)
        before, began = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for request in timed:
            writer.run(pickle.loads(request))
        seconds, after = time.perf_counter() - began, resource.getrusage(resource.RUSAGE_SELF)
        # The last transaction alone in the WAL: no checkpoint may copy it away meanwhile.
        writer.checkpointer.close()
        writer.checkpointer.poke = lambda: None
        writer.connection.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
        writer.connection.commit()
        with sqlite3.connect(path) as other:
            busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert not busy, "the WAL could not be emptied"
        writer.run(pickle.loads(last))
        with sqlite3.connect(path) as db:
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
            pages = wal_pages(path, page_size)
            owner = dict(db.execute("SELECT pageno, name FROM dbstat"))
        writer.close()
    by_table = collections.Counter(owner.get(p, "(freed)") for p in pages)
    last_events = sum(len(b.rows) for b in groups[-1])
    return {"group_requests": group, "events": events, "events_per_second": round(events / seconds),
            "cpu_us_per_event": {"user": round(1e6 * (after.ru_utime - before.ru_utime) / events, 1),
                                 "system": round(1e6 * (after.ru_stime - before.ru_stime) / events, 1)},
            "last_commit": {"events": last_events, "pages": len(pages),
                            "pages_per_event": round(len(pages) / last_events, 2), "by_table": dict(by_table.most_common())}}


def main() -> None:
    parser = argparse.ArgumentParser(description="pages one SQLite ingest commit writes, by table")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--request", type=int, default=REQUEST, help="events per request")
    parser.add_argument("--groups", default="1,2,4", help="requests per transaction")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    batches = requests(args.events, args.request)
    results: dict = {"machine": machine_info(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="metering-pages-") as tmp:
        for group in (int(g) for g in args.groups.split(",")):
            out = measure(batches, group, Path(tmp))
            results["runs"].append(out)
            last = out["last_commit"]
            top = ", ".join(f"{name} {n}" for name, n in list(last["by_table"].items())[:6])
            print(f"{group} x {args.request:,} a commit: {out['events_per_second']:,} events/s, "
                  f"{out['cpu_us_per_event']['user']} + {out['cpu_us_per_event']['system']} us CPU an event; "
                  f"last commit {last['pages']:,} pages ({last['pages_per_event']} an event): {top}", flush=True)
    if not args.no_save:
        save_result("commit-pages", results)


if __name__ == "__main__":
    main()
