"""Query-parameter parsing shared by the controllers: bad values are 422 naming the field."""

from __future__ import annotations

from metering.core.timeutil import parse_time
from metering.errors import Invalid, field_error

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def time_param(name: str, value: str | None, *, required: bool = False) -> int | None:
    if value is None or value == "":
        if required:
            raise Invalid(f"{name} is required", [field_error("is required", name)])
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise Invalid(f"{name} is not an RFC 3339 time", [field_error("must be an RFC 3339 time with an offset", name)]) from None


def choice_param(name: str, value: str | None, choices: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return None
    if value not in choices:
        raise Invalid(f"{name} is invalid", [field_error(f"must be one of {', '.join(choices)}", name)])
    return value


def range_params(start: str | None, end: str | None) -> tuple[int, int]:
    """A required ``[start, end)`` with ``end`` after ``start``."""
    s = time_param("start", start, required=True)
    e = time_param("end", end, required=True)
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
