"""Exact charges: running time priced piecewise, extensions, rounding once."""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.core.charges import (
    UnknownPrice,
    extension_charge,
    price_interval,
    running_charge,
    tariff,
)
from metering.core.lifecycle import Extension, SandboxEvent, derive
from metering.core.money import format_money, round_micro
from metering.core.periods import floor_to
from metering.core.pricing import PriceBook, PriceVersion, TierPrice
from metering.core.timeutil import parse_time

T = parse_time
HOUR = 3_600_000_000
MINUTE = 60_000_000
BASE = T("2020-01-01T00:00:00Z")
CONTRACT_PRICES = {  # micro-dollars: the default book of CONTRACT section 3
    "giga-mini": TierPrice(Fraction(100_000), Fraction(25_000)),
    "giga-standard": TierPrice(Fraction(200_000), Fraction(50_000)),
    "giga-pro": TierPrice(Fraction(400_000), Fraction(100_000)),
}
BOOK = PriceBook([PriceVersion(BASE, CONTRACT_PRICES)])


def total(pieces) -> Fraction:
    return sum((p.amount for p in pieces), Fraction(0))


def test_giga_mini_extension_costs_a_fortieth_of_a_dollar():
    ext = Extension(T("2026-01-01T10:00:00Z"), 1, "giga-mini", "d1")
    assert format_money(round_micro(extension_charge(ext, BOOK))) == "0.025000"
    two = Extension(T("2026-01-01T10:00:00Z"), 2, "giga-standard", "d1")
    assert format_money(round_micro(extension_charge(two, BOOK))) == "0.100000"


def test_giga_mini_running_90_minutes():
    start = T("2026-01-01T10:00:00Z")
    pieces = price_interval(start, start + 90 * MINUTE, "giga-mini", "d1", BOOK)
    assert len(pieces) == 1
    assert format_money(round_micro(total(pieces))) == "0.150000"
    assert running_charge(Fraction(100_000), 90 * MINUTE) == 150_000


def test_running_charge_is_exact_to_the_microsecond():
    # 1 us of giga-mini is 1/36000 micro-dollar: kept exact, not lost
    assert running_charge(Fraction(100_000), 1) == Fraction(1, 36_000)
    assert round_micro(running_charge(Fraction(100_000), 18_000)) == 0  # exactly 1/2 -> even 0
    assert round_micro(running_charge(Fraction(100_000), 54_000)) == 2  # exactly 3/2 -> 2


def test_across_midnight_and_month_end_split_by_window():
    start, end = T("2026-01-31T23:30:00Z"), T("2026-02-01T00:45:00Z")
    for window in ("day", "month"):
        pieces = price_interval(start, end, "giga-standard", "d1", BOOK, window)
        assert [(p.start, p.end) for p in pieces] == [
            (start, T("2026-02-01T00:00:00Z")), (T("2026-02-01T00:00:00Z"), end)]
        assert [format_money(round_micro(p.amount)) for p in pieces] == ["0.100000", "0.150000"]
    # crossing midnight but not a month end: one month bucket, two day buckets, three hours
    start, end = T("2026-01-15T23:00:00Z"), T("2026-01-16T00:30:00Z")
    assert len(price_interval(start, end, "giga-mini", "d1", BOOK, "month")) == 1
    assert len(price_interval(start, end, "giga-mini", "d1", BOOK, "day")) == 2
    assert len(price_interval(start, end, "giga-mini", "d1", BOOK, "hour")) == 2
    assert price_interval(end, start, "giga-mini", "d1", BOOK) == []


def test_price_change_in_the_middle_of_an_interval_is_piecewise():
    change = T("2026-01-01T12:00:00Z")
    book = BOOK.with_version(PriceVersion(change, {
        "giga-mini": TierPrice(Fraction(300_000), Fraction(75_000))}))
    pieces = price_interval(T("2026-01-01T11:00:00Z"), T("2026-01-01T13:00:00Z"),
                            "giga-mini", "d1", book)
    assert [(p.hourly, p.amount) for p in pieces] == [(100_000, 100_000), (300_000, 300_000)]
    assert format_money(round_micro(total(pieces))) == "0.400000"
    # extensions take the price in effect at their own time
    assert extension_charge(Extension(change - 1, 1, "giga-mini", "d1"), book) == 25_000
    assert extension_charge(Extension(change, 1, "giga-mini", "d1"), book) == 75_000


def test_unknown_price_is_an_error_not_zero():
    change = T("2026-01-01T12:00:00Z")
    only_max = {"giga-max": TierPrice(Fraction(1), Fraction(1))}
    book = BOOK.with_version(PriceVersion(change, only_max))
    with pytest.raises(UnknownPrice) as info:
        price_interval(change - HOUR, change + HOUR, "giga-mini", "d1", book)
    assert (info.value.template, info.value.time) == ("giga-mini", change)
    with pytest.raises(UnknownPrice):
        price_interval(BASE - HOUR, BASE + HOUR, "giga-mini", "d1", book)  # before any version
    with pytest.raises(UnknownPrice):
        extension_charge(Extension(change, 1, "giga-mini", "d1"), book)


# --- properties against a direct formula ---------------------------------------------------

SPAN = 80 * 24 * HOUR  # long enough to cross month ends
hourly_prices = st.fractions(min_value=0, max_value=2_000_000, max_denominator=10**4)


@st.composite
def books(draw):
    """A book whose first version starts at BASE; 0-3 later versions at arbitrary instants."""
    starts = draw(st.lists(st.integers(min_value=1, max_value=SPAN), max_size=3, unique=True))
    return PriceBook(
        PriceVersion(BASE + s, {"giga-mini": TierPrice(draw(hourly_prices), draw(hourly_prices))})
        for s in [0, *starts]
    )


def formula(start: int, end: int, template: str, book: PriceBook) -> Fraction:
    """Sum over versions of hourly x (overlap of the version's span with the interval) / 1 h."""
    vs = book.versions
    amount = Fraction(0)
    for v, nxt in zip(vs, [*vs[1:], None]):
        lo = max(start, v.effective_from)
        hi = min(end, nxt.effective_from if nxt else end)
        if hi > lo:
            amount += v.prices[template].hourly * (hi - lo)
    return amount / HOUR


intervals = st.tuples(st.integers(min_value=0, max_value=SPAN),
                      st.integers(min_value=0, max_value=40 * 24 * HOUR))
windows = st.sampled_from([None, "hour", "day", "week", "month"])


@settings(max_examples=200, deadline=None)
@given(books(), intervals, windows)
def test_pieces_sum_to_the_direct_formula(book, interval, window):
    start = BASE + interval[0]
    end = start + interval[1]
    pieces = price_interval(start, end, "giga-mini", "d1", book, window)
    assert total(pieces) == formula(start, end, "giga-mini", book)
    if pieces:
        assert pieces[0].start == start and pieces[-1].end == end
    assert all(p.end == q.start for p, q in zip(pieces, pieces[1:]))
    for p in pieces:
        assert p.hourly == book.at(p.start).prices["giga-mini"].hourly
        assert book.at(p.start) is book.at(p.end - 1)  # no price change inside a piece
        if window:
            assert floor_to(p.start, window) == floor_to(p.end - 1, window)


@settings(max_examples=200, deadline=None)
@given(books(), intervals, st.integers(min_value=1, max_value=50))
def test_tariff_integers_are_the_exact_charges(book, interval, count):
    """Usage adds integers over the tariff's scale: the same amounts as the direct formula."""
    start = BASE + interval[0]
    end = start + interval[1]
    prices = tariff(book)
    scaled = 0
    for seg_start, seg_end, _ in book.segments(start, end):
        scaled += (seg_end - seg_start) * prices.rates("giga-mini", seg_start).per_us
    assert prices.exact(scaled) == formula(start, end, "giga-mini", book)
    ext = Extension(end, count, "giga-mini", "d1")
    assert prices.exact(count * prices.rates("giga-mini", end).per_extension) == extension_charge(ext, book)


@settings(max_examples=200, deadline=None)
@given(books(), intervals, st.lists(st.integers(min_value=0, max_value=SPAN), max_size=6), windows)
def test_cutting_an_interval_anywhere_bills_the_same(book, interval, cuts, window):
    start = BASE + interval[0]
    end = start + interval[1]
    points = sorted({start, end, *(BASE + c for c in cuts if start < BASE + c < end)})
    parts = Fraction(0)
    for a, b in zip(points, points[1:]):
        parts += total(price_interval(a, b, "giga-mini", "d1", book, window))
    assert parts == total(price_interval(start, end, "giga-mini", "d1", book))


@settings(max_examples=200, deadline=None)
@given(books(), intervals, windows)
def test_rounding_once_differs_from_rounded_items_by_rounding_only(book, interval, window):
    start = BASE + interval[0]
    pieces = price_interval(start, start + interval[1], "giga-mini", "d1", book, window)
    once = round_micro(total(pieces))
    items = sum(round_micro(p.amount) for p in pieces)
    assert abs(once - items) <= len(pieces)
    assert 2 * abs(once - items) <= len(pieces) + 1  # each rounding moves at most half a micro


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fractions(min_value=-10**9, max_value=10**9, max_denominator=10**6),
                max_size=30))
def test_rounding_bound_for_any_amounts(amounts):
    once = round_micro(sum(amounts, Fraction(0)))
    assert abs(once - sum(round_micro(a) for a in amounts)) <= max(len(amounts), 0)


# --- events to money, end to end -----------------------------------------------------------

kinds = st.sampled_from(["sandbox.running", "sandbox.extended", "sandbox.stopped",
                         "sandbox.terminated"])


@settings(max_examples=100, deadline=None)
@given(st.data(), books(),
       st.lists(st.tuples(st.integers(min_value=0, max_value=SPAN // MINUTE), kinds), max_size=12),
       windows)
def test_events_to_usage_is_arrival_independent_and_exact(data, book, raw, window):
    events = [
        SandboxEvent(BASE + m * MINUTE, kind, "p", f"e{i}", "d1", None
                     if kind in ("sandbox.stopped", "sandbox.terminated") else "giga-mini",
                     30 if kind == "sandbox.extended" else None)
        for i, (m, kind) in enumerate(raw)
    ]
    as_of = BASE + SPAN + HOUR

    def usage(evs):
        ivs, exts = derive(evs)
        pieces = [p for iv in ivs for p in price_interval(
            iv.start, iv.end if iv.end is not None else as_of, iv.template, iv.deployment_id,
            book, window)]
        return total(pieces) + sum((extension_charge(x, book) for x in exts), Fraction(0))

    expected = usage(events)
    assert usage(data.draw(st.permutations(events))) == expected
    # the same money by the direct formula, with no window at all
    ivs, exts = derive(events)
    running = sum((formula(i.start, as_of if i.end is None else i.end, "giga-mini", book)
                   for i in ivs), Fraction(0))
    extensions = sum((2 * book.at(x.time).prices["giga-mini"].extension for x in exts), Fraction(0))
    assert expected == running + extensions
