"""Run an export: one database snapshot, read in chunks, encoded chunk by chunk.

Memory stays flat whatever the row count: the database hands over ``CHUNK_ROWS`` rows at
a time (a server-side cursor on PostgreSQL, a stepping cursor on SQLite), each chunk is
converted and encoded, and its bytes are sent before more than one further chunk is
read. Slow readers slow the export down rather than buffer it (the server applies
back-pressure).

The usage dataset, which can run to millions of rows, is read in bulk: straight from the
driver (``fetch``), each chunk one Arrow record batch, priced and encoded a column at a
time (``usage_columns``, ``Encoder.batch``). The other datasets, a few rows per invoice or
settlement, go through SQLAlchemy and the API's own views, a row at a time.

All rows come from one read transaction (REPEATABLE READ on PostgreSQL, a WAL snapshot on
SQLite), so an export is consistent even while usage is re-derived underneath it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import Any

import anyio.to_thread
from sqlalchemy import func, select

from metering.core.lifecycle import LifetimePolicy
from metering.core.pricing import PriceBook
from metering.db import Database
from metering.exports.columnar import batch_of_rows
from metering.exports.columns import DATASETS
from metering.exports.fetch import query_schema, reader, snapshot
from metering.exports.formats import Encoder, make_encoder
from metering.exports.plan import ExportRequest, Part
from metering.exports.usage import overrun_parts, usage_parts

__all__ = ["CHUNK_ROWS", "estimate_rows", "export", "plan", "snapshot"]

CHUNK_ROWS = 5_000
# Rows SQLAlchemy's result machinery makes at a time on the event loop (the row-by-row
# datasets): 5,000 at once held the loop for tens of milliseconds on a loaded machine.
FETCH_ROWS = 1_000
_DONE = object()
_producers: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks


def plan(request: ExportRequest, book: PriceBook, now: int, lifetime: LifetimePolicy) -> list[Part]:
    """The export's queries; ``lifetime`` is the settings' ``[lifetime]`` (usage.compute.clip)."""
    start, end, ws = request.start, request.end, request.workspace_id
    if request.dataset == "usage":
        return usage_parts(book, start, end, ws, now, lifetime)
    if request.dataset == "overruns":
        return overrun_parts(book, start, end, ws, now, lifetime)
    # Imported here: the invoice views pull in web3 (through settlements), a second and a
    # half the CLI need not spend on a usage export.
    from metering.exports.records import invoice_parts, line_parts, settlement_parts

    return {"invoices": invoice_parts, "invoice_lines": line_parts,
            "settlements": settlement_parts}[request.dataset](start, end, ws)


def _encode(encoder: Encoder, part: Part, raw: Sequence[Any]) -> tuple[bytes, int]:
    rows = part.convert(raw)
    return encoder.chunk(rows), len(rows)


def _encode_bulk(encoder: Encoder, part: Part, raw: Sequence[Any]) -> tuple[bytes, int]:
    """A chunk of driver tuples as Arrow columns, or row by row where the columns cannot take it."""
    assert part.columns is not None
    batch = part.columns(batch_of_rows(raw, query_schema(part.query)))
    if batch is None:
        return _encode(encoder, part, raw)
    return encoder.batch(batch), batch.num_rows


async def _chunks(db: Database, parts: list[Part]) -> AsyncIterator[tuple[Part, Sequence[Any]]]:
    """Every part's rows, chunk by chunk, from one snapshot: through the driver when every
    part takes Arrow batches (the usage dataset), through SQLAlchemy otherwise."""
    if all(part.columns is not None for part in parts):
        async with reader(db) as source:
            for part in parts:
                async with aclosing(source.chunks(part.query, CHUNK_ROWS)) as chunks:
                    async for raw in chunks:
                        yield part, raw
        return
    async with snapshot(db) as conn:
        for part in parts:
            result = await conn.stream(part.query.execution_options(yield_per=FETCH_ROWS))
            chunk: list[Any] = []
            async for rows in result.partitions():
                chunk.extend(rows)
                while len(chunk) >= CHUNK_ROWS:  # chunks of exactly CHUNK_ROWS: Parquet's row groups
                    yield part, chunk[:CHUNK_ROWS]
                    chunk = chunk[CHUNK_ROWS:]
            if chunk:
                yield part, chunk


async def _produce(db: Database, parts: list[Part], encoder: Encoder, out: asyncio.Queue[Any],
                   room: asyncio.Semaphore) -> None:
    """Read and encode every chunk, one ahead of the sender: it waits for ``room`` before each."""
    async with aclosing(_chunks(db, parts)) as chunks:
        async for part, raw in chunks:
            await room.acquire()
            # Pricing and encoding a chunk is CPU work: off the event loop, so other
            # requests keep being served during a large export.
            encode = _encode if part.columns is None else _encode_bulk
            out.put_nowait(await anyio.to_thread.run_sync(encode, encoder, part, raw))


async def export(
    db: Database, request: ExportRequest, book: PriceBook, now: int,
    on_rows: Callable[[int], None] | None = None, *, lifetime: LifetimePolicy,
) -> AsyncIterator[bytes]:
    """The export's bytes, chunk by chunk; ``on_rows`` hears how many rows each chunk had.

    The database is read in a task of its own, so that the next chunk is read and encoded
    while this one is being sent, and so that when the client goes away midway (the
    response is cancelled), cancelling that task once lets it end its read transaction and
    give its connection back undisturbed.
    """
    encoder = make_encoder(request.format, DATASETS[request.dataset])
    if head := encoder.begin():
        yield head
    chunks: asyncio.Queue[Any] = asyncio.Queue()
    room = asyncio.Semaphore(1)  # one chunk made ahead of the one being sent: flat memory
    producer = asyncio.create_task(_produce(db, plan(request, book, now, lifetime), encoder, chunks, room))
    _producers.add(producer)

    def finished(task: asyncio.Task[None]) -> None:
        _producers.discard(task)
        chunks.put_nowait(_DONE)  # after the last chunk, or after whatever stopped it

    producer.add_done_callback(finished)
    try:
        while (chunk := await chunks.get()) is not _DONE:
            room.release()
            data, count = chunk
            if data:
                yield data
            if on_rows is not None:
                on_rows(count)
        producer.result()  # raises what stopped it early
    finally:
        producer.cancel()  # nothing if it is done
    if tail := encoder.finish():
        yield tail


async def estimate_rows(db: Database, request: ExportRequest, book: PriceBook, now: int, *,
                        lifetime: LifetimePolicy) -> int:
    """Rows the export will have, for a progress bar: exact, except that a usage interval
    crossing a price change becomes one row per price version (so it may be a few more)."""
    total = 0
    async with snapshot(db) as conn:
        for part in plan(request, book, now, lifetime):
            counted = select(func.count()).select_from(part.query.order_by(None).subquery())
            total += (await conn.execute(counted)).scalar_one()
    return total
