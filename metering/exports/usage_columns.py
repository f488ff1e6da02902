"""The usage dataset a chunk at a time, priced over Arrow columns.

The same rows, in the same order, as the per-row functions in ``usage.usage_parts``, for a
whole record batch of stored intervals or extensions at once: the clip to the range
(``usage.compute.clip``), the split where a price version begins (``PriceBook.segments``),
the price in effect (``charges.price_at``) and the exact charge, rounded once, half to even
(``money.round_micro_columns``). A book has few (version, template) prices, so each is
turned into integers once per chunk and looked up by index.

A chunk this cannot take exactly (a template with no price, a count of zero, a charge past
64-bit arithmetic) answers None: the export then converts it with the per-row functions,
which price it, or raise, as they always have.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import pyarrow as pa
import pyarrow.compute as pc

from metering.core.money import round_micro_columns, unit_price_text
from metering.core.periods import HOUR_US
from metering.core.lifecycle import LifetimePolicy
from metering.core.pricing import PriceBook, TierPrice
from metering.exports.columnar import typed_schema
from metering.exports.columns import USAGE
from metering.exports.plan import ColumnConvert

OUT = typed_schema(USAGE)


def _int64(values: list[int]) -> pa.Array:
    return pa.array(values, pa.int64())


def _versions_at(book: PriceBook, times: pa.Array) -> pa.Array:
    """Per time, the index of the version in effect (``PriceBook.at``), -1 before the first."""
    index = pc.subtract(pc.multiply(times, 0), 1)
    for version in book.versions:
        index = pc.add(index, pc.cast(pc.greater_equal(times, version.effective_from), pa.int64()))
    return index


def _prices(book: PriceBook, versions: pa.Array, templates: pa.Array,
            price: Callable[[TierPrice], Fraction]) -> tuple[pa.Array, list[Fraction]] | None:
    """Per row, an index into a list of the chunk's prices (one per version and template);
    None if a row has no price (before the first version, or a template it does not know)."""
    encoded = pc.dictionary_encode(templates)
    names = encoded.dictionary.to_pylist()
    table = [v.prices.get(name) for v in book.versions for name in names]
    index = pc.add(pc.multiply(versions, len(names)), pc.cast(encoded.indices, pa.int64()))
    low = pc.min(versions).as_py()
    if low is not None and (low < 0 or pc.any(pc.take(pa.array([p is None for p in table]), index)).as_py()):
        return None
    return index, [price(p) if p is not None else Fraction(0) for p in table]


def _charge(quantity: pa.Array, index: pa.Array, per_unit: list[Fraction]) -> pa.Array | None:
    """``round_micro(quantity * per_unit[index])`` per row, or None past 64-bit arithmetic
    (the per-row path's Fractions have no such limit)."""
    if max((p.denominator for p in per_unit), default=1) >= 2**62 or \
            max((p.numerator for p in per_unit), default=0) >= 2**63:
        return None
    try:
        numerators = pc.multiply_checked(quantity, pc.take(_int64([p.numerator for p in per_unit]), index))
    except pa.ArrowInvalid:  # overflow
        return None
    return round_micro_columns(numerators, pc.take(_int64([p.denominator for p in per_unit]), index))


def _unit_prices(index: pa.Array, prices: list[Fraction]) -> pa.Array | None:
    """``unit_price_text`` per row, made once per price the chunk uses; None if one has no
    exact decimal text (the per-row path raises for it)."""
    used = set(pc.unique(index).to_pylist())
    try:
        texts = [unit_price_text(p) if i in used else "" for i, p in enumerate(prices)]
    except ValueError:
        return None
    return pc.take(pa.array(texts, pa.string()), index)


def _crosses_a_price_change(book: PriceBook, starts: pa.Array, ends: pa.Array) -> bool:
    return any(pc.any(pc.and_(pc.less(starts, v.effective_from), pc.greater(ends, v.effective_from))).as_py()
               for v in book.versions)


def _split(book: PriceBook, batch: pa.RecordBatch, starts: pa.Array, ends: pa.Array
           ) -> tuple[pa.RecordBatch, pa.Array, pa.Array]:
    """Each row once per price version it spans, as ``price_interval`` splits it. Rare (only
    intervals running when a new version begins), so plain Python over the chunk's rows."""
    rows, piece_starts, piece_ends = [], [], []
    for i, (start, end) in enumerate(zip(starts.to_pylist(), ends.to_pylist())):
        for piece_start, piece_end, _ in book.segments(start, end):
            rows.append(i)
            piece_starts.append(piece_start)
            piece_ends.append(piece_end)
    return batch.take(_int64(rows)), _int64(piece_starts), _int64(piece_ends)


def running_columns(book: PriceBook, start: int, end: int, as_of: int, policy: LifetimePolicy) -> ColumnConvert:
    """Stored intervals (``usage._IV``) to ``running`` export rows, cut as ``policy`` says (usage.compute.clip)."""

    def convert(batch: pa.RecordBatch) -> pa.RecordBatch | None:
        starts = pc.max_element_wise(batch["start"], start)
        ends = pc.min_element_wise(pc.coalesce(batch["end"], as_of), end)  # an open one runs until as_of
        if not policy.bill_beyond:  # nulls (no lifetime end) are skipped
            ends = pc.min_element_wise(ends, pc.add(batch["lifetime_end"], policy.tolerance_us))
        inside = pc.greater(ends, starts)
        batch, starts, ends = batch.filter(inside), starts.filter(inside), ends.filter(inside)
        if _crosses_a_price_change(book, starts, ends):
            batch, starts, ends = _split(book, batch, starts, ends)
        priced = _prices(book, _versions_at(book, starts), batch["template"], lambda p: p.hourly)
        if priced is None:
            return None
        index, hourly = priced
        seconds = pc.subtract(ends, starts)
        amount = _charge(seconds, index, [h / HOUR_US for h in hourly])
        unit_price = _unit_prices(index, hourly)
        if amount is None or unit_price is None:
            return None
        return pa.RecordBatch.from_arrays([
            pa.repeat("running", len(batch)), batch["workspace_id"], batch["deployment_id"], batch["sandbox_id"],
            batch["template"], starts, ends, seconds, pa.nulls(len(batch), pa.int64()), unit_price, amount,
        ], schema=OUT)

    return convert


def extension_columns(book: PriceBook) -> ColumnConvert:
    """Stored extensions (``usage._EXT``) to ``extension`` export rows."""

    def convert(batch: pa.RecordBatch) -> pa.RecordBatch | None:
        counts = batch["count"]
        fewest = pc.min(counts).as_py()
        if fewest is not None and fewest <= 0:
            return None  # the per-row path says what is wrong with it
        priced = _prices(book, _versions_at(book, batch["time"]), batch["template"], lambda p: p.extension)
        if priced is None:
            return None
        index, each = priced
        amount = _charge(counts, index, each)
        # The unit price is the charge over the count: the extension price itself, exactly.
        unit_price = _unit_prices(index, each)
        if amount is None or unit_price is None:
            return None
        nulls = pa.nulls(len(batch), pa.int64())
        return pa.RecordBatch.from_arrays([
            pa.repeat("extension", len(batch)), batch["workspace_id"], batch["deployment_id"], batch["sandbox_id"],
            batch["template"], batch["time"], nulls, nulls, counts, unit_price, amount,
        ], schema=OUT)

    return convert
