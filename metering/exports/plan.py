"""What an export is asked for, and what it reads: queries, each with the function that turns
its rows into export rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlalchemy import Select

from metering.core.timeutil import format_time
from metering.errors import Invalid, NotFound, field_error
from metering.exports.columns import DATASETS, FORMATS

Convert = Callable[[Sequence[Any]], list[tuple[Any, ...]]]
ColumnConvert = Callable[[pa.RecordBatch], "pa.RecordBatch | None"]


@dataclass(frozen=True)
class Part:
    """One query, read in chunks; ``convert`` maps a chunk of its rows to export rows.

    With ``columns``, the part is read in bulk (``fetch``): a chunk arrives as an Arrow
    record batch of the query's columns and ``columns`` maps it to a batch of export rows
    (``columnar.typed_schema``), the same rows ``convert`` makes, or answers None to have
    ``convert`` do that chunk.
    """

    query: Select
    convert: Convert
    columns: ColumnConvert | None = None


@dataclass(frozen=True)
class ExportRequest:
    dataset: str
    start: int
    end: int
    workspace_id: str | None = None
    format: str = "csv"

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise NotFound(f"no export dataset {self.dataset!r}; there are {', '.join(DATASETS)}")
        if self.format not in FORMATS:
            raise Invalid("format is invalid", [field_error(f"must be one of {', '.join(FORMATS)}", "format")])
        if self.end <= self.start:
            raise Invalid("end must be after start", [field_error("must be after start", "end")])

    @property
    def filename(self) -> str:
        scope = f"_{self.workspace_id}" if self.workspace_id else ""
        return f"{self.dataset}{scope}_{format_time(self.start)[:10]}_{format_time(self.end)[:10]}.{self.format}"
