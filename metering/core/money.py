"""Money as integer micro-dollars, with exactly one rounding function.

One micro-dollar is one base unit of USDC, so stored amounts, invoice lines and on-chain
settlements share a unit. Exact intermediate amounts are ``Fraction`` of micro-dollars; they
become integers only through :func:`round_micro`, once per reported amount (or, for an
amount kept as an integer over a common scale, :func:`round_ratio`, which it rounds with).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache
from typing import Any

MICRO = 1_000_000

# ASCII digits only: ``\d`` would also accept e.g. Arabic-Indic digits.
_MONEY_RE = re.compile(r"-?[0-9]+(?:\.[0-9]{1,6})?")
_PRICE_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def round_micro(x: Fraction | int) -> int:
    """Round an exact amount to whole micro-dollars, half to even (banker's rounding).

    Half-even keeps sums of many rounded amounts unbiased; ``round`` on a Fraction does
    exactly that with integer arithmetic (``round_ratio``).
    """
    if isinstance(x, bool) or not isinstance(x, (int, Fraction)):
        raise TypeError(f"round_micro takes int or Fraction, not {type(x).__name__}")
    return round_ratio(x.numerator, x.denominator) if isinstance(x, Fraction) else x


def round_ratio(numerator: int, denominator: int) -> int:
    """``round_micro(Fraction(numerator, denominator))``, without making the Fraction (whose
    gcd costs more than the rounding): where amounts are integers over a common scale."""
    if denominator <= 0:
        raise ValueError(f"the denominator must be positive, not {denominator}")
    floor, remainder = divmod(numerator, denominator)
    if 2 * remainder != denominator:
        return floor + (2 * remainder > denominator)
    return floor + (floor & 1)  # half: to the even neighbour


def round_micro_columns(numerators: Any, denominators: Any) -> Any:
    """:func:`round_micro` of ``Fraction(n, d)`` for whole Arrow columns of int64 ``n`` and ``d``
    (the export's bulk path): the same rule, half to even, in integer arithmetic.

    Takes ``0 <= n`` and ``0 < d < 2**62`` (the caller checks; nothing here can overflow then).
    pyarrow is imported here, not above: the rest of core does not need it.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    quotient = pc.divide(numerators, denominators)  # integer division: floor, for n >= 0
    twice_rest = pc.multiply(pc.subtract(numerators, pc.multiply(quotient, denominators)), 2)
    odd = pc.equal(pc.bit_wise_and(quotient, 1), 1)
    up = pc.or_(pc.greater(twice_rest, denominators), pc.and_(pc.equal(twice_rest, denominators), odd))
    return pc.add(quotient, pc.cast(up, pa.int64()))


def _format_fixed6(units: int) -> str:
    """Integer millionths as a decimal string with exactly six fractional digits."""
    if isinstance(units, bool) or not isinstance(units, int):
        raise TypeError(f"expected int, not {type(units).__name__}")
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), MICRO)
    return f"{sign}{whole}.{frac:06d}"


def format_money(micro: int) -> str:
    """Micro-dollars as the API's money string: ``50000 -> "0.050000"``."""
    return _format_fixed6(micro)


def format_seconds(us: int) -> str:
    """Microseconds as seconds with six decimals: ``5_400_000_000 -> "5400.000000"``."""
    return _format_fixed6(us)


def parse_money(text: str) -> int:
    """Parse a strict money string (at most 6 decimals, no exponent) to micro-dollars."""
    if not isinstance(text, str) or not _MONEY_RE.fullmatch(text):
        raise ValueError(f"not a money amount with at most 6 decimals: {text!r}")
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("-").partition(".")
    value = int(whole) * MICRO + int(frac.ljust(6, "0"))
    return -value if negative else value


def dollars_to_micro(value: str | Decimal | int) -> Fraction:
    """An exact non-negative price in dollars, with any number of decimals, in micro-dollars.

    Used for price book entries, which may be finer than a micro-dollar. Floats are refused:
    ``0.1`` as a float is not one tenth, and a price must be exact.
    """
    if isinstance(value, float):
        raise TypeError("prices must not be floats; write them as strings")
    if isinstance(value, bool):
        raise TypeError("a price is not a bool")
    if isinstance(value, int):
        dec = Decimal(value)
    elif isinstance(value, Decimal):
        dec = value
    elif isinstance(value, str):
        if not _PRICE_RE.fullmatch(value):
            raise ValueError(f"not a plain non-negative decimal: {value!r}")
        try:
            dec = Decimal(value)
        except InvalidOperation as exc:  # pragma: no cover - the regex already guards this
            raise ValueError(f"not a decimal: {value!r}") from exc
    else:
        raise TypeError(f"price must be str, Decimal or int, not {type(value).__name__}")
    if not dec.is_finite():
        raise ValueError(f"price must be finite: {value!r}")
    if dec < 0:
        raise ValueError(f"price must not be negative: {value!r}")
    return Fraction(dec) * MICRO


def micro_to_decimal_text(amount: Fraction | int, min_decimals: int = 6) -> str:
    """An exact amount of micro-dollars as a dollar string, at least ``min_decimals`` digits.

    More digits are used when the value needs them (a price of 0.0000005 USD); a value
    with no finite decimal expansion (denominator not 2^a*5^b) raises ValueError rather
    than silently rounding.
    """
    dollars = Fraction(amount) / MICRO
    den = dollars.denominator
    decimals = 0
    while den % 10 == 0:
        den //= 10
        decimals += 1
    while den % 2 == 0 or den % 5 == 0:
        den //= 2 if den % 2 == 0 else 5
        decimals += 1
    if den != 1:
        raise ValueError(f"{amount} micro-dollars has no exact decimal representation")
    decimals = max(decimals, min_decimals)
    scaled = dollars * 10**decimals  # exact integer by construction
    units = scaled.numerator // scaled.denominator
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**decimals)
    return f"{sign}{whole}.{frac:0{decimals}d}" if decimals else f"{sign}{whole}"


@lru_cache(maxsize=256)
def unit_price_text(price: Fraction) -> str:
    """:func:`micro_to_decimal_text` of a unit price, remembered: a book has a few prices,
    which invoice lines and export rows repeat thousands of times."""
    return micro_to_decimal_text(price)

