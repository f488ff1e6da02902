"""A usage answer made in pieces (usage.controller.usage_answer, on the event loop) is the
answer made at once: the parts' buckets add up to the whole's, to the micro-dollar."""

import asyncio
from fractions import Fraction

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.core.lifecycle import LifetimePolicy
from metering.core.money import format_money, round_micro
from metering.core.pricing import PriceBook, PriceVersion, TierPrice
from metering.usage import controller
from metering.usage.compute import StoredExtension, StoredInterval, aggregate, count_items, items_at_most, total

HOUR = 3_600_000_000
T0 = 1_769_731_200_000_000  # 2026-01-30T00:00:00Z: the ranges cross a month end
BOOK = PriceBook([
    PriceVersion(T0 - 100 * HOUR, {"giga-mini": TierPrice(Fraction(1, 10), Fraction(1, 40)),
                                   "giga-pro": TierPrice(Fraction(2, 5), Fraction(1, 10))}),
    PriceVersion(T0 + 37 * HOUR + 1, {"giga-mini": TierPrice(Fraction(13, 100), Fraction(3, 100)),
                                       "giga-pro": TierPrice(Fraction(37, 100), Fraction(11, 100))}),
])
# Whole hours (rows that span many windows), give or take a few minutes (pieces of windows).
moments = st.builds(lambda hours, minutes: T0 + hours * HOUR + minutes * 60_000_000,
                    st.integers(-24, 6 * 24), st.sampled_from([0, 0, 1, 59]))
lengths = st.builds(lambda hours, minutes: max(1, hours * HOUR + minutes * 60_000_000),
                    st.integers(0, 4 * 24), st.sampled_from([0, 0, 7]))
ids = st.sampled_from(["a", "b", "c"])
intervals = st.builds(
    lambda ws, dep, sb, tpl, start, length, open_, life: StoredInterval(
        ws, dep, sb, tpl, start, None if open_ else start + length, None if life is None else start + life),
    st.just("ws"), ids, ids, st.sampled_from(["giga-mini", "giga-pro"]), moments,
    lengths, st.booleans(), st.none() | lengths)
extensions = st.builds(StoredExtension, st.just("ws"), ids, ids, st.sampled_from(["giga-mini", "giga-pro"]),
                       moments, st.integers(1, 4))


# One usage query's rows and parameters.
QUERIES = dict(
    ivs=st.lists(intervals, max_size=8),
    exts=st.lists(extensions, max_size=5),
    start=moments, length=lengths, as_of=moments,
    window=st.sampled_from([None, "hour", "day", "month"]),
    group_by=st.lists(st.sampled_from(["template", "deployment", "sandbox"]), min_size=1, max_size=3, unique=True),
)


@settings(max_examples=200, deadline=None)
@given(**QUERIES, piece=st.integers(1, 7))
def test_the_answer_in_pieces_is_the_answer_at_once(ivs, exts, start, length, as_of, window, group_by, piece):
    span = dict(start=start, end=start + length, as_of=as_of, lifetime=LifetimePolicy(), group_by=tuple(group_by),
                window=window)
    head = {"workspace_id": "ws"}
    buckets = aggregate(ivs, exts, BOOK, **span)
    at_once = msgspec.json.encode({**head, "items": [controller.item_of(k, b) for k, b in buckets.items()],
                                   "total": format_money(round_micro(total(buckets)))})
    saved, controller.PIECE_WORK = controller.PIECE_WORK, piece
    try:
        in_pieces = asyncio.run(controller.usage_answer(ivs, exts, BOOK, span, head))
    finally:
        controller.PIECE_WORK = saved
    assert in_pieces == at_once


@settings(max_examples=200, deadline=None)
@given(**QUERIES)
def test_the_item_count_is_exact_and_its_bound_is_never_under(ivs, exts, start, length, as_of, window, group_by):
    """The 10,000-item limit is checked with a cheap bound first: the bound may be loose, never
    below the items made, and the exact count is the items made."""
    span = dict(start=start, end=start + length, as_of=as_of, lifetime=LifetimePolicy(), group_by=tuple(group_by),
                window=window)
    made = len(aggregate(ivs, exts, BOOK, **span))
    assert count_items(ivs, exts, **span) == made
    assert items_at_most(ivs, exts, **span) >= made
