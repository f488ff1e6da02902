"""The price book: exact prices, versioned by the time they take effect.

A version is immutable once made; a new book is a new version with a later ``effective_from``.
Looking up "the price at time t" is the only way charges see prices, so a price change in the
middle of an interval is handled by splitting at version boundaries (:meth:`PriceBook.segments`).
"""

from __future__ import annotations

import bisect
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping

from metering.core.money import dollars_to_micro, format_money, micro_to_decimal_text
from metering.core.timeutil import TIME_RANGE, format_time, in_time_range, parse_time, to_us

DEFAULT_RUN_TIERS: tuple[int, ...] = (500_000, 1_000_000, 2_000_000)


def _check_amount(name: str, value: object) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, Fraction)):
        raise TypeError(f"{name} must be an exact Fraction or int of micro-dollars")
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return Fraction(value)


@dataclass(frozen=True)
class TierPrice:
    """Prices of one sandbox template, in exact micro-dollars."""

    hourly: Fraction
    extension: Fraction  # per 15-minute extension

    def __post_init__(self) -> None:
        object.__setattr__(self, "hourly", _check_amount("hourly", self.hourly))
        object.__setattr__(self, "extension", _check_amount("extension", self.extension))


@dataclass(frozen=True)
class PriceVersion:
    """One version of the book, in effect from ``effective_from`` until the next one."""

    effective_from: int
    prices: Mapping[str, TierPrice]
    run_tiers: tuple[int, ...] = field(default=DEFAULT_RUN_TIERS)

    def __post_init__(self) -> None:
        if isinstance(self.effective_from, bool) or not isinstance(self.effective_from, int):
            raise TypeError("effective_from must be int microseconds")
        for template, price in self.prices.items():
            if not isinstance(template, str) or not template:
                raise ValueError(f"bad template name {template!r}")
            if not isinstance(price, TierPrice):
                raise TypeError(f"price of {template!r} must be a TierPrice")
        tiers = tuple(self.run_tiers)
        if any(isinstance(t, bool) or not isinstance(t, int) or t <= 0 for t in tiers):
            raise ValueError("run tiers must be positive int micro-dollars")
        # A read-only copy: a version must never change after it is made.
        object.__setattr__(self, "prices", MappingProxyType(dict(self.prices)))
        object.__setattr__(self, "run_tiers", tiers)

    def __hash__(self) -> int:
        return hash((self.effective_from, tuple(sorted(self.prices.items())), self.run_tiers))


class PriceBook:
    """All price versions, ordered by ``effective_from``."""

    def __init__(self, versions: Iterable[PriceVersion] = ()) -> None:
        ordered = sorted(versions, key=lambda v: v.effective_from)
        starts = [v.effective_from for v in ordered]
        for a, b in zip(starts, starts[1:]):
            if a == b:
                raise ValueError(f"two price versions take effect at {format_time(a)}")
        self._versions = tuple(ordered)
        self._starts = starts

    @property
    def versions(self) -> tuple[PriceVersion, ...]:
        return self._versions

    def __iter__(self) -> Iterator[PriceVersion]:
        return iter(self._versions)

    def __len__(self) -> int:
        return len(self._versions)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PriceBook) and self._versions == other._versions

    def __hash__(self) -> int:
        return hash(self._versions)

    def __repr__(self) -> str:
        return f"PriceBook({list(self._versions)!r})"

    def at(self, us: int) -> PriceVersion | None:
        """The version in effect at ``us`` (greatest ``effective_from <= us``), if any."""
        i = bisect.bisect_right(self._starts, us)
        return self._versions[i - 1] if i else None

    def segments(self, start: int, end: int) -> list[tuple[int, int, PriceVersion | None]]:
        """Split ``[start, end)`` where a new version takes effect; None before the first."""
        if end <= start:
            return []
        out: list[tuple[int, int, PriceVersion | None]] = []
        cursor = start
        i = bisect.bisect_right(self._starts, start)  # index of the next version to start
        while cursor < end:
            stop = min(self._starts[i], end) if i < len(self._starts) else end
            out.append((cursor, stop, self._versions[i - 1] if i else None))
            cursor = stop
            i += 1
        return out

    @property
    def templates(self) -> frozenset[str]:
        """Every template priced by any version."""
        return frozenset(t for v in self._versions for t in v.prices)

    def knows(self, template: str, us: int) -> bool:
        """Whether ``template`` has a price in the version in effect at ``us``."""
        v = self.at(us)
        return v is not None and template in v.prices

    def with_version(self, version: PriceVersion) -> PriceBook:
        """A new book with ``version`` added (ValueError if its start is already taken)."""
        return PriceBook((*self._versions, version))

    def replacing(self, version: PriceVersion) -> PriceBook:
        """A new book with ``version`` in it, in place of any version with its start (a what-if)."""
        return PriceBook((*(v for v in self._versions if v.effective_from != version.effective_from), version))


# --- documents (TOML config and JSON API) -------------------------------------------------

_VERSION_KEYS = {"effective_from", "prices", "run_tiers"}
_PRICE_KEYS = {"hourly", "extension"}


# A price is at most this many dollars (per hour, per extension, per run): with times bounded
# too, every amount billed, reported or exported fits a 64-bit column.
MAX_PRICE_DOLLARS = 10_000


def _price(value: Any, where: str) -> Fraction:
    try:
        micro = dollars_to_micro(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from exc
    if micro > MAX_PRICE_DOLLARS * 1_000_000:
        raise ValueError(f"{where}: at most {MAX_PRICE_DOLLARS} dollars")
    return micro


def _run_tiers(values: Any, where: str) -> tuple[int, ...]:
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where}: run_tiers must be a non-empty list of amounts")
    tiers = []
    for value in values:
        micro = _price(value, where)
        if micro.denominator != 1 or micro <= 0:
            raise ValueError(f"{where}: run tier {value!r} is not a positive whole micro-dollar")
        tiers.append(int(micro))
    return tuple(tiers)


def _effective_from(value: Any, where: str) -> int:
    # TOML may carry a native (aware) datetime; JSON and quoted TOML carry a string.
    if not isinstance(value, (datetime, str)):
        raise ValueError(f"{where}: effective_from must be an RFC 3339 string")
    try:
        us = to_us(value) if isinstance(value, datetime) else parse_time(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    if not in_time_range(us):
        raise ValueError(f"{where}: must lie in {TIME_RANGE}")
    return us


def price_version_from_doc(
    doc: Mapping[str, Any], default_run_tiers: tuple[int, ...] = DEFAULT_RUN_TIERS
) -> PriceVersion:
    """A version from its document: ``{"effective_from", "prices": {t: {hourly, extension}},
    "run_tiers"?}`` with prices as decimal strings in dollars. Raises ValueError if malformed."""
    if not isinstance(doc, Mapping):
        raise ValueError("a price version must be a table/object")
    unknown = set(doc) - _VERSION_KEYS
    if unknown:
        raise ValueError(f"unknown keys in price version: {sorted(unknown)}")
    if "effective_from" not in doc:
        raise ValueError("price version: effective_from is required")
    effective_from = _effective_from(doc["effective_from"], "effective_from")
    prices_doc = doc.get("prices")
    if not isinstance(prices_doc, Mapping) or not prices_doc:
        raise ValueError("price version: prices must be a non-empty table")
    prices = {}
    for template, entry in prices_doc.items():
        where = f"prices.{template}"
        if not isinstance(entry, Mapping) or set(entry) != _PRICE_KEYS:
            raise ValueError(f"{where}: exactly the keys 'hourly' and 'extension' are required")
        prices[template] = TierPrice(
            hourly=_price(entry["hourly"], f"{where}.hourly"),
            extension=_price(entry["extension"], f"{where}.extension"),
        )
    run_tiers = (
        _run_tiers(doc["run_tiers"], "run_tiers") if "run_tiers" in doc else default_run_tiers
    )
    try:
        return PriceVersion(effective_from, prices, run_tiers)
    except TypeError as exc:
        raise ValueError(str(exc)) from exc


def price_version_to_doc(v: PriceVersion) -> dict[str, Any]:
    """A JSON-ready document of ``v``; prices are exact dollar strings, at least 6 decimals."""
    return {
        "effective_from": format_time(v.effective_from),
        "prices": {
            template: {
                "hourly": micro_to_decimal_text(p.hourly),
                "extension": micro_to_decimal_text(p.extension),
            }
            for template, p in sorted(v.prices.items())
        },
        "run_tiers": [format_money(t) for t in v.run_tiers],
    }


def parse_price_book(doc: Mapping[str, Any]) -> PriceBook:
    """The book from the parsed ``config/pricing.toml``: a top-level ``run_tiers`` shared by
    every ``[[versions]]`` entry unless the entry has its own."""
    unknown = set(doc) - {"run_tiers", "versions"}
    if unknown:
        raise ValueError(f"unknown keys in price book: {sorted(unknown)}")
    tiers = _run_tiers(doc["run_tiers"], "run_tiers") if "run_tiers" in doc else DEFAULT_RUN_TIERS
    versions = doc.get("versions")
    if not isinstance(versions, list) or not versions:
        raise ValueError("price book: at least one [[versions]] entry is required")
    parsed = []
    for i, entry in enumerate(versions):
        try:
            parsed.append(price_version_from_doc(entry, tiers))
        except ValueError as exc:
            raise ValueError(f"versions[{i}]: {exc}") from exc
    return PriceBook(parsed)


def price_book_from_toml(text: str) -> PriceBook:
    """Parse TOML text; bare TOML floats become exact Decimals instead of binary floats."""
    return parse_price_book(tomllib.loads(text, parse_float=Decimal))
