"""``metering export``: an export written to a file, with a progress bar on a terminal."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import IO

from metering.core.lifecycle import LifetimePolicy
from metering.db import Database
from metering.db.base import now_us
from metering.exports.plan import ExportRequest
from metering.exports.service import estimate_rows, export
from metering.pricing.service import PriceCatalog

BAR_WIDTH = 30


class ProgressBar:
    """``usage [#########.........]  61% 123,456/200,000 rows``, redrawn at most 10 times a second."""

    def __init__(self, stream: IO[str], label: str, total: int) -> None:
        self.stream, self.label, self.total = stream, label, total
        self.rows = 0
        self.drawn_at = 0

    def add(self, rows: int) -> None:
        self.rows += rows
        now = time.monotonic_ns()
        if now - self.drawn_at >= 100_000_000:
            self.drawn_at = now
            self.draw()

    def draw(self, end: str = "") -> None:
        # The total is an estimate for usage (price changes split rows): never past 100 %.
        shown = min(self.rows, self.total) if self.total else 0
        filled = BAR_WIDTH * shown // self.total if self.total else BAR_WIDTH
        percent = 100 * shown // self.total if self.total else 100
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percent:3d}% "
                          f"{self.rows:,}/{max(self.rows, self.total):,} rows{end}")
        self.stream.flush()


async def export_to_file(db: Database, prices: PriceCatalog, job: ExportRequest, output: str,
                         progress: IO[str] | None = None, *, lifetime: LifetimePolicy) -> int:
    """Write the export to ``output`` (``-``: standard output); returns the number of rows.

    A file is written under a temporary name and renamed when complete, so an interrupted
    export never leaves a truncated file that looks finished.
    """
    book = await prices.refresh(db)
    now = now_us()
    total = await estimate_rows(db, job, book, now, lifetime=lifetime) if progress else 0
    bar = ProgressBar(progress, job.dataset, total) if progress else None
    rows = 0

    def count(n: int) -> None:
        nonlocal rows
        rows += n
        if bar is not None:
            bar.add(n)

    if output == "-":
        async for data in export(db, job, book, now, count, lifetime=lifetime):
            sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        target = Path(output)
        partial = target.with_name(target.name + ".partial")
        try:
            with partial.open("wb") as out:
                async for data in export(db, job, book, now, count, lifetime=lifetime):
                    out.write(data)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    if bar is not None:
        bar.draw(end="\n")
    return rows
