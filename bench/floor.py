"""The floor: the least work that stores these events durably, measured in the same run.

msgspec decodes each batch into typed structs, and sqlite3 ``executemany`` inserts the same
rows in 1,000-row transactions, WAL, ``synchronous=FULL``, the service's page size.  Two tables:

- ``floor``: the events table's columns with only its primary key and the unique
  ``(source, event_id)`` key that deduplication needs (the official floor: ingest is
  reported as a ratio to it);
- ``floor_indexed``: the same plus the two secondary indexes the service's events table has.

No validation, no canonical JSON or hash (the payload is the struct re-encoded), no usage
derivation, no HTTP: everything the service adds on top is what the ratio shows.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgspec

from metering.db.engine import SQLITE_PAGE_SIZE
from metering.events.schemas import CloudEvent

TABLE = """CREATE TABLE events (
    id INTEGER PRIMARY KEY, source VARCHAR(512) NOT NULL, event_id VARCHAR(128) NOT NULL,
    type VARCHAR(32) NOT NULL, time BIGINT NOT NULL, workspace_id VARCHAR(128) NOT NULL,
    deployment_id VARCHAR(128) NOT NULL, sandbox_id VARCHAR(128), run_id VARCHAR(128),
    template VARCHAR(128), minutes INTEGER, body_hash VARCHAR(64) NOT NULL, payload TEXT NOT NULL,
    received_at BIGINT NOT NULL, UNIQUE (source, event_id))"""
INDEXES = (
    "CREATE INDEX ix_events_workspace_type_time ON events (workspace_id, type, time)",
    "CREATE INDEX ix_events_sandbox_time ON events (workspace_id, sandbox_id, time)",
)
INSERT = ("INSERT INTO events (source, event_id, type, time, workspace_id, deployment_id, sandbox_id, run_id, "
          "template, minutes, body_hash, payload, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")
TX_ROWS = 1_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_US = timedelta(microseconds=1)


def _rows(body: bytes, decoder: msgspec.json.Decoder, encoder: msgspec.json.Encoder) -> list[tuple]:
    out = []
    for e in decoder.decode(body):
        d = e.data
        out.append((e.source, e.id, e.type, (e.time - EPOCH) // ONE_US, d.workspace_id, d.deployment_id, d.sandbox_id, d.run_id,
                    d.template, d.minutes, "", encoder.encode(e).decode(), 0))
    return out


def _timed(bodies: list[bytes], tx_rows: int, write: Callable[[list[tuple]], None]) -> dict:
    """Decode every body and ``write`` its rows ``tx_rows`` at a time (one transaction each), timed."""
    decoder, encoder = msgspec.json.Decoder(list[CloudEvent]), msgspec.json.Encoder()
    events = 0
    began = time.perf_counter()
    for body in bodies:
        rows = _rows(body, decoder, encoder)
        for lo in range(0, len(rows), tx_rows):
            write(rows[lo : lo + tx_rows])
        events += len(rows)
    elapsed = time.perf_counter() - began
    return {"events": events, "seconds": round(elapsed, 3), "events_per_second": round(events / elapsed)}


def measure(bodies: list[bytes], *, indexed: bool = False, workdir: Path | None = None,
            tx_rows: int = TX_ROWS) -> dict:
    """``tx_rows``: events per transaction (bench.matrix: the batch size of the cell)."""
    tmp = Path(tempfile.mkdtemp(prefix="metering-floor-", dir=workdir))
    try:
        conn = sqlite3.connect(tmp / "floor.db", isolation_level=None)
        conn.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")  # the service's: its gain is not the floor's to lack
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(TABLE)
        for sql in INDEXES if indexed else ():
            conn.execute(sql)

        def write(rows: list[tuple]) -> None:
            conn.execute("BEGIN")
            conn.executemany(INSERT, rows)
            conn.execute("COMMIT")

        result = _timed(bodies, tx_rows, write)
        conn.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def measure_pg(bodies: list[bytes], *, tx_rows: int) -> dict:
    """PostgreSQL's floor: the same decoding, and asyncpg ``executemany`` into the same table
    (its primary key and unique ``(source, event_id)`` only), one transaction per ``tx_rows``
    events, on a throw-away database of the cluster the service uses."""
    import asyncio

    import asyncpg

    from tests.pgdb import throwaway_database

    insert = INSERT
    for n in range(1, 14):  # ? -> $n
        insert = insert.replace("?", f"${n}", 1)

    async def transaction(conn: asyncpg.Connection, rows: list[tuple]) -> None:
        async with conn.transaction():
            await conn.executemany(insert, rows)

    with throwaway_database("metering_floor") as url:
        loop = asyncio.new_event_loop()
        conn = loop.run_until_complete(asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://")))
        try:
            loop.run_until_complete(conn.execute(TABLE.replace("id INTEGER PRIMARY KEY", "id BIGSERIAL PRIMARY KEY")))
            return _timed(bodies, tx_rows, lambda rows: loop.run_until_complete(transaction(conn, rows)))
        finally:
            loop.run_until_complete(conn.close())
            loop.close()
