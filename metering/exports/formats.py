"""Encoders: rows in, bytes out, one chunk at a time, so nothing grows with the export.

Each encoder has ``begin()`` (bytes before the first row), ``chunk(rows)`` and
``finish()``; all three are plain functions so the caller may run them off the event loop.
``batch(record_batch)`` takes a chunk as Arrow columns (``columnar.typed_schema``) and writes
the same bytes as ``chunk`` would for its rows, a column at a time; text it cannot write
that way (to quote or escape) goes through ``chunk``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from decimal import Context, Decimal
from typing import Any, Protocol

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metering.core.money import format_money
from metering.core.timeutil import format_time
from metering.exports.columnar import joined_bytes, micros_decimal, rows_of, text_cells
from metering.exports.columns import DECIMAL, INT, MICROS, TEXT, TIME, Column

MEDIA_TYPES = {
    "csv": "text/csv",  # Litestar adds "; charset=utf-8" to a text/* type
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
Row = Sequence[Any]


class Encoder(Protocol):
    def begin(self) -> bytes: ...
    def chunk(self, rows: Sequence[Row]) -> bytes: ...
    def batch(self, batch: pa.RecordBatch) -> bytes: ...
    def finish(self) -> bytes: ...


def _same(value: Any) -> Any:
    return value


# Text for CSV and NDJSON: the API's own money and time strings (CONTRACT section 1).
_TEXT_OF: dict[str, Callable[[Any], Any]] = {
    TEXT: _same, INT: _same, DECIMAL: _same, MICROS: format_money, TIME: format_time,
}


def _formatters(columns: Sequence[Column]) -> list[Callable[[Any], Any]]:
    return [_TEXT_OF[c.kind] for c in columns]


def _format_row(formatters: list[Callable[[Any], Any]], row: Row) -> list[Any]:
    return [None if v is None else f(v) for f, v in zip(formatters, row)]


class CsvEncoder:
    """RFC 4180: CRLF line ends, fields quoted only when they need it, a header row."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = columns
        self.formatters = _formatters(columns)
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer, lineterminator="\r\n")

    def _take(self) -> bytes:
        data = self.buffer.getvalue().encode()
        self.buffer.seek(0)
        self.buffer.truncate()
        return data

    def begin(self) -> bytes:
        self.writer.writerow([c.name for c in self.columns])
        return self._take()

    def chunk(self, rows: Sequence[Row]) -> bytes:
        # The csv module writes None as an empty field.
        self.writer.writerows(_format_row(self.formatters, r) for r in rows)
        return self._take()

    def batch(self, batch: pa.RecordBatch) -> bytes:
        cells = text_cells(self.columns, batch)
        if cells is None:
            return self.chunk(rows_of(batch))
        # Plain text: no field needs quotes, so a record is its fields joined by commas.
        records = pc.binary_join_element_wise(*cells, ",", null_handling="replace", null_replacement="")
        return joined_bytes(pc.binary_join_element_wise(records, "\r\n", ""))

    def finish(self) -> bytes:
        return b""


class NdjsonEncoder:
    """One JSON object per line, keys in column order; money and times are strings."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = columns
        self.names = [c.name for c in columns]
        self.formatters = _formatters(columns)
        self.encoder = msgspec.json.Encoder()
        # What goes before each value: '{"kind":', then ',"workspace_id":' and so on.
        self.keys = [("{" if i == 0 else ",") + self.encoder.encode(name).decode() + ":"
                     for i, name in enumerate(self.names)]

    def begin(self) -> bytes:
        return b""

    def chunk(self, rows: Sequence[Row]) -> bytes:
        lines = [self.encoder.encode(dict(zip(self.names, _format_row(self.formatters, r)))) for r in rows]
        return b"\n".join(lines) + b"\n" if lines else b""

    def batch(self, batch: pa.RecordBatch) -> bytes:
        cells = text_cells(self.columns, batch)
        if cells is None:
            return self.chunk(rows_of(batch))
        parts: list[Any] = []
        for key, column, cell in zip(self.keys, self.columns, cells):
            # Plain text needs no escaping: a JSON string is the text in quotes; INT is a number.
            value = cell if column.kind == INT else pc.binary_join_element_wise('"', cell, '"', "")
            parts += [key, pc.coalesce(value, "null")]
        return joined_bytes(pc.binary_join_element_wise(*parts, "}\n", ""))

    def finish(self) -> bytes:
        return b""


# 38 digits covers every decimal128(38, s) value; the default context's 28 could round.
_EXACT = Context(prec=38)


def _micros_to_decimal(value: int) -> Decimal:
    """Millionths as an exact Decimal, built from the integer: never through a float."""
    return Decimal(value).scaleb(-6, _EXACT)


def _arrow_type(column: Column) -> pa.DataType:
    if column.kind == TEXT:
        return pa.string()
    if column.kind == INT:
        return pa.int64()
    if column.kind == MICROS:
        return pa.decimal128(38, 6)
    if column.kind == DECIMAL:
        return pa.decimal128(38, column.scale)
    return pa.timestamp("us", tz="UTC")  # TIME: the stored integer microseconds as they are


def arrow_schema(columns: Sequence[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, _arrow_type(c)) for c in columns])


_ARROW_VALUE: dict[str, Callable[[Any], Any]] = {
    TEXT: _same, INT: _same, TIME: _same, MICROS: _micros_to_decimal,
    # pyarrow refuses a value with more decimals than the scale ("would cause data loss").
    DECIMAL: Decimal,
}


class _Drain:
    """A write-only file for ParquetWriter whose bytes are taken away after each row group.

    Parquet puts its index (the footer) at the end, and the writer never seeks back, so
    the bytes written so far can be sent at once and only the footer waits for ``close``.
    """

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


class ParquetEncoder:
    """One row group per chunk; money as decimal128(38, 6), times as timestamp[us, UTC]."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = columns
        self.schema = arrow_schema(columns)
        self.sink = _Drain()
        self.writer: pq.ParquetWriter | None = None

    def begin(self) -> bytes:
        self.writer = pq.ParquetWriter(self.sink, self.schema)
        return self.sink.take()

    def chunk(self, rows: Sequence[Row]) -> bytes:
        assert self.writer is not None
        if not rows:
            return b""
        arrays = []
        for i, (column, field) in enumerate(zip(self.columns, self.schema)):
            convert = _ARROW_VALUE[column.kind]
            arrays.append(pa.array([None if r[i] is None else convert(r[i]) for r in rows], type=field.type))
        self.writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        return self.sink.take()

    def batch(self, batch: pa.RecordBatch) -> bytes:
        assert self.writer is not None
        if not batch.num_rows:
            return b""  # as chunk: no empty row group
        arrays = []
        for column, field, values in zip(self.columns, self.schema, batch.columns):
            if column.kind == MICROS:
                values = micros_decimal(values)
            elif column.kind in (DECIMAL, TIME):  # exact text to decimal; microseconds to timestamp
                values = pc.cast(values, field.type)
            arrays.append(values)
        self.writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        return self.sink.take()

    def finish(self) -> bytes:
        assert self.writer is not None
        self.writer.close()
        return self.sink.take()


def make_encoder(fmt: str, columns: Sequence[Column]) -> Encoder:
    return {"csv": CsvEncoder, "ndjson": NdjsonEncoder, "parquet": ParquetEncoder}[fmt](columns)
