"""UTC hours, days, Monday weeks and calendar months, and splitting ranges at them."""

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.core.periods import floor_to, next_boundary, period_bounds, split_at_boundaries
from metering.core.timeutil import from_us, parse_time

T = parse_time


def test_known_boundaries():
    t = T("2026-01-15T13:45:10.5Z")  # a Thursday
    assert floor_to(t, "hour") == T("2026-01-15T13:00:00Z")
    assert floor_to(t, "day") == T("2026-01-15T00:00:00Z")
    assert floor_to(t, "week") == T("2026-01-12T00:00:00Z")  # Monday
    assert floor_to(t, "month") == T("2026-01-01T00:00:00Z")
    assert next_boundary(t, "month") == T("2026-02-01T00:00:00Z")
    assert next_boundary(T("2025-12-31T23:59:59.999999Z"), "month") == T("2026-01-01T00:00:00Z")
    assert next_boundary(T("2024-02-10T00:00:00Z"), "month") == T("2024-03-01T00:00:00Z")
    assert period_bounds(T("2024-02-29T12:00:00Z"), "month") == (
        T("2024-02-01T00:00:00Z"), T("2024-03-01T00:00:00Z"))
    assert period_bounds(T("2026-01-12T00:00:00Z"), "week") == (
        T("2026-01-12T00:00:00Z"), T("2026-01-19T00:00:00Z"))
    # a boundary instant belongs to the period it starts
    assert period_bounds(T("2026-02-01T00:00:00Z"), "day") == (
        T("2026-02-01T00:00:00Z"), T("2026-02-02T00:00:00Z"))


def test_unknown_units():
    with pytest.raises(ValueError):
        floor_to(0, "year")
    with pytest.raises(ValueError):
        period_bounds(0, "hour")  # a window, not a billing period
    with pytest.raises(ValueError):
        split_at_boundaries(0, 10, "fortnight")


def test_split_across_midnight_and_month_end():
    start, end = T("2026-01-31T23:30:00Z"), T("2026-02-01T00:45:00Z")
    mid = T("2026-02-01T00:00:00Z")
    assert split_at_boundaries(start, end, "day") == [(start, mid), (mid, end)]
    assert split_at_boundaries(start, end, "month") == [(start, mid), (mid, end)]
    assert split_at_boundaries(start, end, None) == [(start, end)]
    assert split_at_boundaries(end, start, "day") == []
    assert split_at_boundaries(start, start, None) == []


units = st.sampled_from(["hour", "day", "week", "month"])
instants = st.integers(min_value=-(10**16), max_value=5 * 10**16)


@settings(max_examples=300, deadline=None)
@given(instants, units)
def test_floor_and_next_define_the_unit(us, unit):
    lo, hi = floor_to(us, unit), next_boundary(us, unit)
    assert lo <= us < hi
    assert floor_to(lo, unit) == lo and floor_to(hi - 1, unit) == lo
    start, stop = from_us(lo), from_us(hi)
    for d in (start, stop):
        assert (d.minute, d.second, d.microsecond) == (0, 0, 0)
    if unit == "hour":
        assert stop - start == timedelta(hours=1)
    elif unit == "day":
        assert start.hour == 0 and stop - start == timedelta(days=1)
    elif unit == "week":
        assert start.hour == 0 and start.weekday() == 0 and stop - start == timedelta(days=7)
    else:
        assert start.hour == 0 and start.day == 1 and stop.day == 1
        assert (stop.year * 12 + stop.month) - (start.year * 12 + start.month) == 1


@settings(max_examples=200, deadline=None)
@given(instants, st.integers(min_value=0, max_value=90 * 86_400_000_000),
       st.one_of(st.none(), units))
def test_split_covers_the_range_within_units(start, length, unit):
    end = start + length
    pieces = split_at_boundaries(start, end, unit)
    if length == 0:
        assert pieces == []
        return
    assert pieces[0][0] == start and pieces[-1][1] == end
    assert all(a < b for a, b in pieces)
    assert all(p[1] == q[0] for p, q in zip(pieces, pieces[1:]))
    if unit is not None:
        assert all(floor_to(a, unit) == floor_to(b - 1, unit) for a, b in pieces)
        assert all(floor_to(b, unit) == b for _, b in pieces[:-1])
