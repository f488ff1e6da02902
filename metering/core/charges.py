"""Exact charges: running time and extensions, priced from the book in effect.

Everything here is an exact ``Fraction`` of micro-dollars; rounding happens once, later, per
reported amount (``money.round_micro``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from math import lcm

from metering.core.lifecycle import Extension
from metering.core.periods import HOUR_US, split_at_boundaries
from metering.core.pricing import PriceBook, TierPrice
from metering.core.timeutil import format_time


class UnknownPrice(LookupError):
    """No price for ``template`` at ``time``: billing it at zero would be silently wrong."""

    def __init__(self, template: str, time: int) -> None:
        super().__init__(f"no price for template {template!r} at {format_time(time)}")
        self.template = template
        self.time = time


@dataclass(frozen=True)
class Piece:
    """A part of a running interval inside one price version (and one window, if asked)."""

    start: int
    end: int
    template: str
    deployment_id: str
    hourly: Fraction
    amount: Fraction

    @property
    def duration(self) -> int:
        return self.end - self.start


def running_charge(hourly: Fraction, duration_us: int) -> Fraction:
    """``hourly * duration / 1 hour``, exact to the microsecond."""
    return Fraction(hourly) * Fraction(duration_us, HOUR_US)


def price_at(book: PriceBook, template: str, us: int) -> TierPrice:
    """The template's prices in the version in effect at ``us``, or :class:`UnknownPrice`."""
    version = book.at(us)
    if version is None or template not in version.prices:
        raise UnknownPrice(template, us)
    return version.prices[template]


def price_interval(
    start: int,
    end: int,
    template: str,
    deployment_id: str,
    book: PriceBook,
    window: str | None = None,
) -> list[Piece]:
    """Price ``[start, end)`` piecewise: split at price changes and at ``window`` boundaries,
    each piece at the version in effect at its start."""
    pieces = []
    for seg_start, seg_end, _ in book.segments(start, end):
        hourly = price_at(book, template, seg_start).hourly
        for s, e in split_at_boundaries(seg_start, seg_end, window):
            amount = running_charge(hourly, e - s)
            pieces.append(Piece(s, e, template, deployment_id, hourly, amount))
    return pieces


def extension_charge(ext: Extension, book: PriceBook) -> Fraction:
    """``count`` extensions at the extension price in effect at the event's time."""
    return ext.count * price_at(book, ext.template, ext.time).extension


@dataclass(frozen=True, eq=False)
class Rates:
    """A template's prices in one version, also as integers over the book's common scale.

    One object per (version, template) in a :class:`Tariff`, compared by identity: cheap to
    keep in a set while adding up thousands of rows.
    """

    hourly: Fraction
    extension: Fraction
    per_us: int  # the running charge of one microsecond, times the scale
    per_extension: int  # one extension's charge, times the scale


class Tariff:
    """The price book over one common denominator, so adding up charges is integer arithmetic.

    ``scale`` is a multiple of every price's denominator times one hour in microseconds, so
    ``hourly * duration / HOUR_US`` is the integer ``duration * per_us`` over ``scale``: exact,
    like the Fraction arithmetic above, at a fraction of its cost (no gcd on every addition).
    """

    def __init__(self, book: PriceBook) -> None:
        self.book = book
        denominators = [HOUR_US * p.hourly.denominator for v in book for p in v.prices.values()]
        denominators += [p.extension.denominator for v in book for p in v.prices.values()]
        self.scale = lcm(HOUR_US, *denominators)
        self._rates: dict[tuple[int | None, str], Rates] = {}

    def rates(self, template: str, us: int) -> Rates:
        """The template's rates in the version in effect at ``us``, or :class:`UnknownPrice`."""
        version = self.book.at(us)
        key = (version.effective_from if version else None, template)
        found = self._rates.get(key)
        if found is None:
            price = price_at(self.book, template, us)
            hourly, extension = price.hourly, price.extension  # the scale divides both exactly
            found = self._rates[key] = Rates(
                hourly, extension,
                hourly.numerator * (self.scale // (HOUR_US * hourly.denominator)),
                extension.numerator * (self.scale // extension.denominator))
        return found

    def exact(self, scaled: int) -> Fraction:
        return Fraction(scaled, self.scale)


@lru_cache(maxsize=8)
def tariff(book: PriceBook) -> Tariff:
    """One tariff per book: the book changes only when a price version is added."""
    return Tariff(book)
