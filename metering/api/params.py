"""Query-parameter parsing shared by the controllers: bad values are 422 naming the field."""

from __future__ import annotations

import re

from metering.core.timeutil import TIME_RANGE, parse_bounded_time
from metering.errors import Invalid, field_error
from metering.events.schemas import ID_PATTERN

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
ADDRESS_PATTERN = re.compile(r"0x[0-9a-fA-F]{40}")
ID_RULE = "must be 1 to 128 characters of A-Z a-z 0-9 _ . : -"


def time_param(name: str, value: str | None, *, required: bool = False, end: bool = False) -> int | None:
    """``end``: the exclusive end of a range, which may be 2100-01-01 itself."""
    if value is None or value == "":
        if required:
            raise Invalid(f"{name} is required", [field_error("is required", name)])
        return None
    try:
        return parse_bounded_time(value, end=end)
    except ValueError:
        raise Invalid(f"{name} is not an RFC 3339 time in {TIME_RANGE}",
                      [field_error(f"must be an RFC 3339 time with an offset, in {TIME_RANGE}", name)]) from None


def id_param(name: str, value: str | None, pattern: re.Pattern[str] = ID_PATTERN,
             rule: str = ID_RULE) -> str | None:
    """An id to filter by: one that no stored row can have is a 422, not an empty answer."""
    if value is None:
        return None
    if not pattern.fullmatch(value):
        raise Invalid(f"{name} is invalid", [field_error(rule, name)])
    return value


def choice_param(name: str, value: str | None, choices: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return None
    if value not in choices:
        raise Invalid(f"{name} is invalid", [field_error(f"must be one of {', '.join(choices)}", name)])
    return value


def range_params(start: str | None, end: str | None) -> tuple[int, int]:
    """A required ``[start, end)`` with ``end`` after ``start``."""
    s = time_param("start", start, required=True)
    e = time_param("end", end, required=True, end=True)
    assert s is not None and e is not None
    if e <= s:
        raise Invalid("end must be after start", [field_error("must be after start", "end")])
    return s, e


def limit_param(value: int | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not 1 <= value <= MAX_LIMIT:
        raise Invalid("limit is out of range", [field_error(f"must be 1 to {MAX_LIMIT}", "limit")])
    return value
