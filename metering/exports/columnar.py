"""Export rows as Arrow columns, and the text of a whole column at once.

The bulk path (``service.export``) keeps a chunk as one Arrow record batch from the driver
to the encoder instead of a Python tuple per row: pyarrow's kernels run in C over the
whole column. Each function here writes exactly what its per-value counterpart writes
(``format_money``, ``format_time``, the csv module, msgspec); tests/exports/test_columnar.py
compares them value by value.

A kernel covers the values the service produces (times in 1970-9999, plain identifiers);
for anything else it answers None and the caller takes the per-row path for that chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from metering.core.money import MICRO
from metering.core.timeutil import format_time
from metering.exports.columns import DECIMAL, INT, MICROS, TEXT, TIME, Column

DAY_US = 86_400_000_000
# Printable ASCII but for space, '"', ',' and '\\': no CSV quoting, no JSON escaping.
_PLAIN = bytes(b for b in range(0x21, 0x7F) if b not in b'",\\')


def typed_schema(columns: Sequence[Column]) -> pa.Schema:
    """A dataset's export rows as Arrow types: text as string, every number as int64 (the
    values ``formats`` takes: MICROS as millionths, TIME as microseconds, DECIMAL as text)."""
    return pa.schema([pa.field(c.name, pa.string() if c.kind in (TEXT, DECIMAL) else pa.int64()) for c in columns])


def batch_of_rows(rows: Sequence[Sequence[Any]], schema: pa.Schema) -> pa.RecordBatch:
    """Tuples (a driver's chunk) as one record batch: a column at a time, in C."""
    columns = zip(*rows) if rows else [()] * len(schema)
    return pa.RecordBatch.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema)], schema=schema)


def rows_of(batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
    """The batch as export rows again (str, int, None), for the per-row encoders."""
    return list(zip(*(column.to_pylist() for column in batch.columns)))


def is_plain(texts: pa.Array) -> bool:
    """Whether every value is a plain token that CSV writes unquoted and JSON unescaped:
    one pass over the column's bytes, deleting the plain ones; nothing may be left."""
    return not joined_bytes(texts).translate(None, _PLAIN)


def _non_negative(values: pa.Array) -> bool:
    """pyarrow's integer division truncates; for values >= 0 that is the floor the text needs."""
    low = pc.min(values).as_py()
    return low is None or low >= 0


def fixed6(values: pa.Array) -> pa.Array | None:
    """Millionths as "12.345600" (``format_money``, ``format_seconds``); nulls stay null."""
    if not _non_negative(values):
        return None
    whole = pc.divide(values, MICRO)
    frac = pc.subtract(values, pc.multiply(whole, MICRO))
    return pc.binary_join_element_wise(pc.cast(whole, pa.string()),
                                       pc.utf8_lpad(pc.cast(frac, pa.string()), width=6, padding="0"), ".")


@lru_cache(maxsize=1)
def _clock() -> pa.Array:
    """"HH:MM:SS" for every second of a day, looked up rather than formatted 86,400 ways."""
    return pa.array([f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)])


def rfc3339(values: pa.Array) -> pa.Array | None:
    """Microseconds since the epoch as ``format_time`` writes them: "2026-01-10T10:00:00Z",
    with ".000001" only when there are microseconds; nulls stay null."""
    if not _non_negative(values) or (pc.max(values).as_py() or 0) >= 253_402_300_800_000_000:  # year 10000
        return None
    days = pc.divide(values, DAY_US)
    # A chunk spans few days: each is formatted once, by format_time itself.
    distinct = pc.unique(days).drop_null()
    dates = pa.array([format_time(d * DAY_US)[:11] for d in distinct.to_pylist()], pa.string())
    in_day = pc.subtract(values, pc.multiply(days, DAY_US))
    seconds = pc.divide(in_day, MICRO)
    micros = pc.subtract(in_day, pc.multiply(seconds, MICRO))
    fraction: Any = ""  # most times are whole seconds: then no row needs one
    if pc.max(micros).as_py():
        fraction = pc.if_else(pc.equal(micros, 0), "", pc.binary_join_element_wise(
            ".", pc.utf8_lpad(pc.cast(micros, pa.string()), width=6, padding="0"), ""))
    return pc.binary_join_element_wise(pc.take(dates, pc.index_in(days, distinct)), pc.take(_clock(), seconds),
                                       fraction, "Z", "")


def micros_decimal(values: pa.Array) -> pa.Array:
    """Millionths as decimal128(38, 6): the same unscaled integer, read with six decimals."""
    unscaled = pc.cast(values, pa.decimal128(38, 0))
    return pa.Array.from_buffers(pa.decimal128(38, 6), len(unscaled), unscaled.buffers(), offset=unscaled.offset)


def text_cells(columns: Sequence[Column], batch: pa.RecordBatch) -> list[pa.Array] | None:
    """Each column's text for CSV and NDJSON (``formats._TEXT_OF``), or None if one needs the
    per-row path (text to quote or escape, a value out of the kernels' range)."""
    cells = []
    for column, values in zip(columns, batch.columns):
        if column.kind in (TEXT, DECIMAL):
            cell = values if is_plain(values) else None
        elif column.kind == INT:
            cell = pc.cast(values, pa.string())
        elif column.kind == MICROS:
            cell = fixed6(values)
        elif column.kind == TIME:
            cell = rfc3339(values)
        else:  # pragma: no cover - every kind is above
            raise ValueError(column.kind)
        if cell is None:
            return None
        cells.append(cell)
    return cells


def joined_bytes(lines: pa.Array) -> bytes:
    """A string array's values end to end, as one bytes object (no copy per value)."""
    if len(lines) == 0 or lines.buffers()[2] is None:
        return b""
    offsets = memoryview(lines.buffers()[1]).cast("i")
    first, last = offsets[lines.offset], offsets[lines.offset + len(lines)]
    return memoryview(lines.buffers()[2])[first:last].tobytes()
