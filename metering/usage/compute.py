"""Usage of one workspace over ``[start, end)``: exact amounts, each rounded once.

Pure: takes the stored billable rows and the price book, returns the report.  Each item
rounds its own amounts; the total is the exact sum rounded once (CONTRACT 4.6).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from metering.core.charges import extension_charge, price_interval
from metering.core.lifecycle import Extension
from metering.core.periods import floor_to
from metering.core.pricing import PriceBook

GROUP_FIELDS = {"template": "template", "deployment": "deployment_id", "sandbox": "sandbox_id"}


@dataclass(frozen=True)
class StoredInterval:
    workspace_id: str
    deployment_id: str
    sandbox_id: str
    template: str
    start: int
    end: int | None


@dataclass(frozen=True)
class StoredExtension:
    workspace_id: str
    deployment_id: str
    sandbox_id: str
    template: str
    time: int
    count: int


@dataclass
class Bucket:
    running_us: int = 0
    running: Fraction = field(default_factory=Fraction)
    extensions: int = 0
    extension: Fraction = field(default_factory=Fraction)
    # The distinct unit prices seen: one means the line has a single unit price.
    hourly_prices: set[Fraction] = field(default_factory=set)
    extension_prices: set[Fraction] = field(default_factory=set)

    @property
    def amount(self) -> Fraction:
        return self.running + self.extension


GroupKey = tuple[tuple[str, str], ...]


def clip(iv: StoredInterval, start: int, end: int, as_of: int) -> tuple[int, int] | None:
    """The part of an interval inside the query; an open one runs until ``as_of``."""
    s = max(iv.start, start)
    e = min(iv.end if iv.end is not None else as_of, end)
    return (s, e) if e > s else None


def _key(row: StoredInterval | StoredExtension, group_by: Sequence[str], window_start: int | None) -> GroupKey:
    key = tuple((GROUP_FIELDS[g], getattr(row, GROUP_FIELDS[g])) for g in group_by)
    return key + ((("window_start", window_start),) if window_start is not None else ())


def aggregate(
    intervals: Iterable[StoredInterval],
    extensions: Iterable[StoredExtension],
    book: PriceBook,
    *,
    start: int,
    end: int,
    as_of: int,
    group_by: Sequence[str] = ("template",),
    window: str | None = None,
) -> dict[GroupKey, Bucket]:
    buckets: dict[GroupKey, Bucket] = defaultdict(Bucket)
    for iv in intervals:
        span = clip(iv, start, end, as_of)
        if span is None:
            continue
        for piece in price_interval(span[0], span[1], iv.template, iv.deployment_id, book, window):
            bucket = buckets[_key(iv, group_by, floor_to(piece.start, window) if window else None)]
            bucket.running_us += piece.duration
            bucket.running += piece.amount
            bucket.hourly_prices.add(piece.hourly)
    for ext in extensions:
        if not start <= ext.time < end:
            continue
        charge = extension_charge(Extension(ext.time, ext.count, ext.template, ext.deployment_id), book)
        bucket = buckets[_key(ext, group_by, floor_to(ext.time, window) if window else None)]
        bucket.extensions += ext.count
        bucket.extension += charge
        bucket.extension_prices.add(charge / ext.count)
    return dict(sorted(buckets.items()))
