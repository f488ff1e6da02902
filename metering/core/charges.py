"""Exact charges: running time and extensions, priced from the book in effect.

Everything here is an exact ``Fraction`` of micro-dollars; rounding happens once, later, per
reported amount (``money.round_micro``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

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
