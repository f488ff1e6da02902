"""Time: int microseconds since the epoch, strict RFC 3339 at the edges."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.core.timeutil import format_time, from_us, parse_time, to_us

JAN_2026 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def test_known_instants():
    assert parse_time("2026-01-01T00:00:00Z") == JAN_2026
    assert format_time(JAN_2026) == "2026-01-01T00:00:00Z"
    assert format_time(JAN_2026 + 500_000) == "2026-01-01T00:00:00.500000Z"
    assert parse_time("2026-01-01T01:30:00+01:30") == JAN_2026
    assert parse_time("2025-12-31T19:00:00-05:00") == JAN_2026
    assert parse_time("2026-01-01t00:00:00z") == JAN_2026
    assert parse_time("1970-01-01T00:00:00Z") == 0
    assert format_time(-1) == "1969-12-31T23:59:59.999999Z"


def test_fraction_digits():
    assert parse_time("2026-01-01T00:00:00.5Z") == JAN_2026 + 500_000
    assert parse_time("2026-01-01T00:00:00.000001Z") == JAN_2026 + 1
    # digits beyond the microsecond are truncated, not rounded through a float
    assert parse_time("2026-01-01T00:00:00.123456789Z") == JAN_2026 + 123_456


@pytest.mark.parametrize(
    "text",
    ["2026-01-01T00:00:00", "2026-01-01 00:00:00Z", "2026-01-01", "2026-1-01T00:00:00Z",
     "2026-01-01T00:00:00.Z", "2026-01-01T00:00:00.1234567890Z", "2026-02-30T00:00:00Z",
     "2026-01-01T24:00:00Z", "2026-01-01T00:00:60Z", "2026-01-01T00:00:00+24:00",
     "2026-01-01T00:00:00+01:60", "2026-01-01T00:00:00+0100", "2026-01-01T00:00:00+01",
     "0000-01-01T00:00:00Z", "2026-01-01T00:00:00Z ", "1767225600", ""],
)
def test_parse_time_rejects(text):
    with pytest.raises(ValueError):
        parse_time(text)


def test_naive_datetime_refused():
    with pytest.raises(ValueError):
        to_us(datetime(2026, 1, 1))


def test_from_us_is_utc():
    assert from_us(JAN_2026) == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert from_us(JAN_2026).utcoffset() == timedelta(0)


us_range = st.integers(min_value=-(10**16), max_value=5 * 10**16)


@settings(max_examples=300, deadline=None)
@given(us_range)
def test_format_parse_round_trip(us):
    assert parse_time(format_time(us)) == us
    assert to_us(from_us(us)) == us


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
)
def test_parse_time_matches_stdlib(naive, offset_minutes):
    tz = timezone(timedelta(minutes=offset_minutes))
    dt = naive.replace(tzinfo=tz)
    text = dt.isoformat()  # "+hh:mm" offset, microseconds when nonzero
    expected = (dt - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    assert parse_time(text) == expected
