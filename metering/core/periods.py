"""UTC calendar units: billing periods, usage windows, and splitting time ranges at them."""

from __future__ import annotations

from datetime import datetime, timezone

from metering.core.timeutil import from_us, to_us

PERIODS = ("day", "week", "month")
WINDOWS = ("hour", "day", "month")
UNITS = ("hour", "day", "week", "month")

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
WEEK_US = 7 * DAY_US
# The epoch (1970-01-01) was a Thursday; Monday 1969-12-29 is 3 days before it.
_MONDAY_SHIFT_US = 3 * DAY_US

_FIXED = {"hour": HOUR_US, "day": DAY_US}


def _check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise ValueError(f"unknown time unit {unit!r}; expected one of {UNITS}")


def _month_start(year: int, month: int) -> int:
    return to_us(datetime(year, month, 1, tzinfo=timezone.utc))


def floor_to(us: int, unit: str) -> int:
    """Start of the UTC hour/day/week (Monday 00:00)/calendar month containing ``us``."""
    _check_unit(unit)
    if unit in _FIXED:
        return us - us % _FIXED[unit]  # Python's % floors, so this is right before 1970 too
    if unit == "week":
        return us - (us + _MONDAY_SHIFT_US) % WEEK_US
    d = from_us(us)
    return _month_start(d.year, d.month)


def next_boundary(us: int, unit: str) -> int:
    """Start of the unit following the one containing ``us``."""
    start = floor_to(us, unit)
    if unit in _FIXED:
        return start + _FIXED[unit]
    if unit == "week":
        return start + WEEK_US
    d = from_us(start)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return _month_start(year, month)


def period_bounds(us: int, period: str) -> tuple[int, int]:
    """``[period_start, period_end)`` of the billing period containing ``us``."""
    if period not in PERIODS:
        raise ValueError(f"unknown billing period {period!r}; expected one of {PERIODS}")
    return floor_to(us, period), next_boundary(us, period)


def split_at_boundaries(start: int, end: int, unit: str | None) -> list[tuple[int, int]]:
    """Split ``[start, end)`` at every ``unit`` boundary inside it (None: do not split)."""
    if end <= start:
        return []
    if unit is None:
        return [(start, end)]
    _check_unit(unit)
    pieces = []
    cursor = start
    while cursor < end:
        stop = min(next_boundary(cursor, unit), end)
        pieces.append((cursor, stop))
        cursor = stop
    return pieces
