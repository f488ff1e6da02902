"""Usage of one workspace over ``[start, end)``: exact amounts, each rounded once.

Pure: takes the stored billable rows and the price book, returns the report.  Each item
rounds its own amounts; the total is the exact sum rounded once (CONTRACT 4.6).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from operator import attrgetter
from typing import NamedTuple

from metering.core.charges import Rates, tariff
from metering.core.lifecycle import LifetimePolicy
from metering.core.periods import DAY_US, HOUR_US, floor_to, split_at_boundaries
from metering.core.pricing import PriceBook
from metering.core.timeutil import from_us

GROUP_FIELDS = {"template": "template", "deployment": "deployment_id", "sandbox": "sandbox_id"}


class StoredInterval(NamedTuple):
    workspace_id: str
    deployment_id: str
    sandbox_id: str
    template: str
    start: int
    end: int | None
    lifetime_end: int | None = None


class StoredExtension(NamedTuple):
    workspace_id: str
    deployment_id: str
    sandbox_id: str
    template: str
    time: int
    count: int


@dataclass
class Bucket:
    """Amounts are integers over ``scale`` (the price book's common denominator): exact."""

    scale: int
    running_us: int = 0
    running_scaled: int = 0
    extensions: int = 0
    extension_scaled: int = 0
    # The rates seen (one object per price version and template, hashed by identity).
    running_rates: set[Rates] = field(default_factory=set)
    extension_rates: set[Rates] = field(default_factory=set)

    @property
    def running(self) -> Fraction:
        return Fraction(self.running_scaled, self.scale)

    @property
    def extension(self) -> Fraction:
        return Fraction(self.extension_scaled, self.scale)

    @property
    def amount(self) -> Fraction:
        return Fraction(self.running_scaled + self.extension_scaled, self.scale)

    def add(self, other: Bucket) -> None:
        """Add ``other``'s usage (a bucket of the same key, over the same scale) to this one."""
        if other.scale != self.scale:
            raise ValueError("buckets over different scales")
        self.running_us += other.running_us
        self.running_scaled += other.running_scaled
        self.extensions += other.extensions
        self.extension_scaled += other.extension_scaled
        self.running_rates |= other.running_rates
        self.extension_rates |= other.extension_rates

    # The distinct unit prices: exactly one means the line has a single unit price.
    @property
    def hourly_prices(self) -> set[Fraction]:
        return {r.hourly for r in self.running_rates}

    @property
    def extension_prices(self) -> set[Fraction]:
        return {r.extension for r in self.extension_rates}


GroupKey = tuple[tuple[str, str], ...]


def clip(iv: StoredInterval, start: int, end: int, as_of: int, lifetime: LifetimePolicy) -> tuple[int, int] | None:
    """The part of an interval inside the query; an open one runs until ``as_of``.

    The one place where ``[lifetime] bill_beyond = false`` cuts running time past the
    lifetime end plus the tolerance: usage queries, invoices, reports and exports all clip
    here, and a late extension moves the stored lifetime end, so it restores what it covers.
    ``lifetime`` is the caller's settings' (``settings.lifetime.policy``), passed down
    explicitly: two apps with different settings in one process each bill by their own.
    """
    s = max(iv.start, start)
    e = min(iv.end if iv.end is not None else as_of, end)
    if not lifetime.bill_beyond and iv.lifetime_end is not None:
        e = min(e, iv.lifetime_end + lifetime.tolerance_us)
    return (s, e) if e > s else None


def aggregate(
    intervals: Iterable[StoredInterval],
    extensions: Iterable[StoredExtension],
    book: PriceBook,
    *,
    start: int,
    end: int,
    as_of: int,
    lifetime: LifetimePolicy,
    group_by: Sequence[str] = ("template",),
    window: str | None = None,
) -> dict[GroupKey, Bucket]:
    prices = tariff(book)
    names = [GROUP_FIELDS[g] for g in group_by]
    # Buckets are found by the plain tuple of grouped values (cheap to build for every row);
    # the named key of the result is made once per bucket, at the end.
    values_of = attrgetter(*names) if len(names) > 1 else (lambda row: (getattr(row, names[0]),))
    buckets: dict[tuple, Bucket] = {}

    def bucket_for(row: StoredInterval | StoredExtension, at: int) -> Bucket:
        key = values_of(row) + (floor_to(at, window),) if window else values_of(row)
        found = buckets.get(key)
        if found is None:
            found = buckets[key] = Bucket(prices.scale)
        return found

    for iv in intervals:
        span = clip(iv, start, end, as_of, lifetime)
        if span is None:
            continue
        # Priced piecewise: split where a price version starts, then at window boundaries.
        for seg_start, seg_end, _ in book.segments(*span):
            rates = prices.rates(iv.template, seg_start)
            for s, e in split_at_boundaries(seg_start, seg_end, window):
                bucket = bucket_for(iv, s)
                bucket.running_us += e - s
                bucket.running_scaled += (e - s) * rates.per_us
                bucket.running_rates.add(rates)
    for ext in extensions:
        if not start <= ext.time < end:
            continue
        rates = prices.rates(ext.template, ext.time)
        bucket = bucket_for(ext, ext.time)
        bucket.extensions += ext.count
        bucket.extension_scaled += ext.count * rates.per_extension
        bucket.extension_rates.add(rates)
    labels = [*names, "window_start"] if window else names
    return dict(sorted((tuple(zip(labels, key)), bucket) for key, bucket in buckets.items()))


# A usage query answers at most this many items (CONTRACT 1, Bounds).
MAX_ITEMS = 10_000


def window_index(us: int, window: str) -> int:
    """The number of the hour, day or month holding ``us``: consecutive windows, consecutive numbers."""
    if window == "month":
        d = from_us(us)
        return d.year * 12 + d.month
    return floor_to(us, window) // (HOUR_US if window == "hour" else DAY_US)


def items_at_most(
    intervals: Sequence[StoredInterval], extensions: Sequence[StoredExtension], *, start: int, end: int,
    group_by: Sequence[str] = ("template",), window: str | None = None, **_: object,
) -> int:
    """A cheap upper bound on ``count_items``: each group has at most one item per window of
    the range.  Most queries are far below the limit, and this saves them the exact count."""
    values_of = attrgetter(*(GROUP_FIELDS[g] for g in group_by))
    groups = len({values_of(row) for row in intervals} | {values_of(row) for row in extensions})
    return groups * (window_index(end - 1, window) - window_index(start, window) + 1 if window else 1)


def count_items(
    intervals: Iterable[StoredInterval],
    extensions: Iterable[StoredExtension],
    *,
    start: int,
    end: int,
    as_of: int,
    lifetime: LifetimePolicy,
    group_by: Sequence[str] = ("template",),
    window: str | None = None,
) -> int:
    """How many items ``aggregate`` would make with the same arguments, without making them.

    Each group's windows are the union of its rows' window ranges: the count costs one sort
    of the rows, however many windows the rows span.
    """
    names = [GROUP_FIELDS[g] for g in group_by]
    ranges: dict[tuple, list[tuple[int, int]]] = {}
    for iv in intervals:
        span = clip(iv, start, end, as_of, lifetime)
        if span is not None:
            key = tuple(getattr(iv, n) for n in names)
            first, last = (window_index(span[0], window), window_index(span[1] - 1, window)) if window else (0, 0)
            ranges.setdefault(key, []).append((first, last))
    for ext in extensions:
        if start <= ext.time < end:
            at = window_index(ext.time, window) if window else 0
            ranges.setdefault(tuple(getattr(ext, n) for n in names), []).append((at, at))
    total = 0
    for spans in ranges.values():
        reach = None  # the last window counted for this group
        for first, last in sorted(spans):
            if reach is None or first > reach:
                total += last - first + 1
            elif last > reach:
                total += last - reach
            reach = last if reach is None else max(reach, last)
    return total


def total(buckets: dict[GroupKey, Bucket]) -> Fraction:
    """A usage query's total: the exact sum of its buckets, to be rounded once (CONTRACT 4.6)."""
    scales = {b.scale for b in buckets.values()}
    if len(scales) == 1:  # the usual case, one tariff: integers add faster than Fractions
        return Fraction(sum(b.running_scaled + b.extension_scaled for b in buckets.values()), scales.pop())
    return sum((b.amount for b in buckets.values()), start=Fraction(0))
