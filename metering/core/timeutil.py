"""Time as int microseconds since the Unix epoch, UTC ("us").

Integers make interval arithmetic exact and comparisons cheap; datetimes appear only at the
edges (parsing and formatting RFC 3339).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)

# RFC 3339 date-time; 'T' and 'Z' are case-insensitive in its ABNF. The offset is mandatory.
_RFC3339_RE = re.compile(
    r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})[Tt]"
    r"(?P<h>[0-9]{2}):(?P<mi>[0-9]{2}):(?P<s>[0-9]{2})"
    r"(?:\.(?P<frac>[0-9]{1,9}))?"
    r"(?P<tz>[Zz]|(?P<sign>[+-])(?P<oh>[0-9]{2}):(?P<om>[0-9]{2}))"
)


# Every time the service takes in (CONTRACT 1, Bounds) lies in [TIME_MIN, TIME_MAX): what is
# accepted can always be billed, reported and exported, and every sum of such times fits.
TIME_MIN = 946_684_800_000_000  # 2000-01-01T00:00:00Z
TIME_MAX = 4_102_444_800_000_000  # 2100-01-01T00:00:00Z
TIME_RANGE = "[2000-01-01, 2100-01-01)"


def in_time_range(us: int) -> bool:
    return TIME_MIN <= us < TIME_MAX


def parse_bounded_time(text: str, *, end: bool = False) -> int:
    """``parse_time``, and ValueError for a time outside ``TIME_RANGE``; the exclusive ``end``
    of a range may be ``TIME_MAX`` itself (the range still lies inside)."""
    us = parse_time(text)
    if not (in_time_range(us) or (end and us == TIME_MAX)):
        raise ValueError(f"{text!r} is not in {TIME_RANGE}")
    return us


def to_us(dt: datetime) -> int:
    """An aware datetime as microseconds since the epoch (naive ones are ambiguous: refused)."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("naive datetime: a timezone is required")
    return (dt - EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    """Microseconds since the epoch as an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=us)


def format_time(us: int) -> str:
    """RFC 3339 in UTC with ``Z``; microseconds only when nonzero."""
    d = from_us(us)
    text = f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
    if d.microsecond:
        text += f".{d.microsecond:06d}"
    return text + "Z"


def parse_time(text: str) -> int:
    """Parse a strict RFC 3339 date-time with an offset to microseconds since the epoch.

    Fractional seconds beyond the sixth digit are truncated (at most nine are accepted);
    everything is integer arithmetic so no precision is lost on the way.
    """
    m = _RFC3339_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"not an RFC 3339 date-time with offset: {text!r}")
    micro = int((m["frac"] or "")[:6].ljust(6, "0"))
    offset = timedelta(0)
    if m["sign"]:
        oh, om = int(m["oh"]), int(m["om"])
        if oh > 23 or om > 59:
            raise ValueError(f"bad UTC offset in {text!r}")
        offset = timedelta(hours=oh, minutes=om)
        if m["sign"] == "-":
            offset = -offset
    try:
        dt = datetime(
            int(m["y"]), int(m["mo"]), int(m["d"]),
            int(m["h"]), int(m["mi"]), int(m["s"]), micro,
            tzinfo=timezone(offset),
        )
        return to_us(dt)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"invalid date-time {text!r}: {exc}") from exc
