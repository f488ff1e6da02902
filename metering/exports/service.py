"""Run an export: one database snapshot, read in chunks, encoded chunk by chunk.

Memory stays flat whatever the row count: the database hands over ``CHUNK_ROWS`` rows at
a time (a server-side cursor on PostgreSQL, a stepping cursor on SQLite; SQLAlchemy makes
them ``FETCH_ROWS`` at a time, on the event loop), each chunk is converted and encoded, and
its bytes are yielded before the next chunk is read. Slow readers slow the export down
rather than buffer it (the server applies back-pressure).

All rows come from one read transaction (REPEATABLE READ on PostgreSQL, a WAL snapshot on
SQLite), so an export is consistent even while usage is re-derived underneath it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from metering.core.pricing import PriceBook
from metering.db import Database
from metering.exports.columns import DATASETS
from metering.exports.formats import Encoder, make_encoder
from metering.exports.plan import ExportRequest, Part
from metering.exports.usage import overrun_parts, usage_parts

CHUNK_ROWS = 5_000
# Rows the driver's result machinery makes at a time, on the event loop (SQLAlchemy's async
# bridge): 5,000 at once held the loop for tens of milliseconds on a loaded machine.
FETCH_ROWS = 1_000


def plan(request: ExportRequest, book: PriceBook, now: int) -> list[Part]:
    start, end, ws = request.start, request.end, request.workspace_id
    if request.dataset == "usage":
        return usage_parts(book, start, end, ws, now)
    if request.dataset == "overruns":
        return overrun_parts(book, start, end, ws, now)
    # Imported here: the invoice views pull in web3 (through settlements), a second and a
    # half the CLI need not spend on a usage export.
    from metering.exports.records import invoice_parts, line_parts, settlement_parts

    return {"invoices": invoice_parts, "invoice_lines": line_parts,
            "settlements": settlement_parts}[request.dataset](start, end, ws)


@asynccontextmanager
async def snapshot(db: Database) -> AsyncIterator[AsyncConnection]:
    async with db.engine.connect() as conn:
        if not db.is_sqlite:
            await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            yield conn


def _encode(encoder: Encoder, part: Part, raw: Sequence[Any]) -> tuple[bytes, int]:
    rows = part.convert(raw)
    return encoder.chunk(rows), len(rows)


async def _chunks(partitions: AsyncIterator[Sequence[Any]]) -> AsyncIterator[list[Any]]:
    """``FETCH_ROWS`` partitions gathered into chunks of ``CHUNK_ROWS`` (the last one shorter)."""
    chunk: list[Any] = []
    async for rows in partitions:
        chunk.extend(rows)
        if len(chunk) >= CHUNK_ROWS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def export(
    db: Database, request: ExportRequest, book: PriceBook, now: int,
    on_rows: Callable[[int], None] | None = None,
) -> AsyncIterator[bytes]:
    """The export's bytes, chunk by chunk; ``on_rows`` hears how many rows each chunk had."""
    encoder = make_encoder(request.format, DATASETS[request.dataset])
    if head := encoder.begin():
        yield head
    async with snapshot(db) as conn:
        for part in plan(request, book, now):
            result = await conn.stream(part.query.execution_options(yield_per=FETCH_ROWS))
            async for raw in _chunks(result.partitions()):
                # Pricing and encoding a chunk is CPU work: off the event loop, so other
                # requests keep being served during a large export.
                data, count = await anyio.to_thread.run_sync(_encode, encoder, part, raw)
                if data:
                    yield data
                if on_rows is not None:
                    on_rows(count)
    if tail := encoder.finish():
        yield tail


async def estimate_rows(db: Database, request: ExportRequest, book: PriceBook, now: int) -> int:
    """Rows the export will have, for a progress bar: exact, except that a usage interval
    crossing a price change becomes one row per price version (so it may be a few more)."""
    total = 0
    async with snapshot(db) as conn:
        for part in plan(request, book, now):
            counted = select(func.count()).select_from(part.query.order_by(None).subquery())
            total += (await conn.execute(counted)).scalar_one()
    return total
