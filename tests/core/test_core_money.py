"""Money: one half-even rounding function, strict parsing, exact formatting."""

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.core.money import (
    MICRO,
    dollars_to_micro,
    format_money,
    format_seconds,
    micro_to_decimal_text,
    parse_money,
    round_micro,
    round_ratio,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Fraction(5, 2), 2),
        (Fraction(7, 2), 4),
        (Fraction(1, 2), 0),
        (Fraction(3, 2), 2),
        (Fraction(-5, 2), -2),
        (Fraction(-7, 2), -4),
        (Fraction(-1, 2), 0),
        (Fraction(5, 3), 2),
        (Fraction(-5, 3), -2),
        (Fraction(249_999, 100_000), 2),
        (Fraction(250_001, 100_000), 3),
        (7, 7),
        (-7, -7),
    ],
)
def test_round_micro_half_even(value, expected):
    assert round_micro(value) == expected
    assert type(round_micro(value)) is int


def test_round_micro_refuses_inexact_input():
    with pytest.raises(TypeError):
        round_micro(Decimal("0.5"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        round_micro(True)  # type: ignore[arg-type]


def _oracle_round(x: Fraction) -> int:
    """Half-even by hand: floor, then compare twice the remainder with one."""
    floor = x.numerator // x.denominator
    twice_rest = 2 * (x - floor)
    if twice_rest > 1 or (twice_rest == 1 and floor % 2 == 1):
        return floor + 1
    return floor


@settings(max_examples=300, deadline=None)
@given(st.fractions(max_denominator=10**7))
def test_round_micro_matches_oracle(x):
    assert round_micro(x) == _oracle_round(x)
    assert abs(round_micro(x) - x) <= Fraction(1, 2)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(10**30), 10**30), st.integers(1, 10**24), st.booleans())
def test_round_ratio_is_round_micro_of_the_fraction(numerator, denominator, half):
    if half:  # exactly between two integers, however the ratio reduces
        denominator *= 2
        numerator = numerator // denominator * denominator + denominator // 2
    assert round_ratio(numerator, denominator) == round_micro(Fraction(numerator, denominator)) \
        == round(Fraction(numerator, denominator))


@pytest.mark.parametrize(
    ("micro", "text"),
    [(50_000, "0.050000"), (-1, "-0.000001"), (0, "0.000000"), (1_234_567_890, "1234.567890"),
     (-1_500_000, "-1.500000"), (MICRO, "1.000000")],
)
def test_format_and_parse_money(micro, text):
    assert format_money(micro) == text
    assert parse_money(text) == micro


@pytest.mark.parametrize("text", ["0.5", "12", "-3.25", "0.000001", "-0"])
def test_parse_money_accepts_short_forms(text):
    assert parse_money(text) == int(Decimal(text) * MICRO)


@pytest.mark.parametrize(
    "text",
    ["", "-", ".5", "1.", "1.0000001", "1e3", "nan", "inf", "+1", " 1", "1 ", "1\n", "1,5",
     "--1", "0x10", "١", "1_000"],
)
def test_parse_money_rejects(text):
    with pytest.raises(ValueError):
        parse_money(text)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_money_round_trip(micro):
    text = format_money(micro)
    assert parse_money(text) == micro
    assert Decimal(text) * MICRO == micro  # the string means what it says
    assert len(text.split(".")[1]) == 6


def test_format_seconds():
    assert format_seconds(5_400_000_000) == "5400.000000"
    assert format_seconds(1) == "0.000001"
    assert format_seconds(0) == "0.000000"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0.025", Fraction(25_000)), ("0.10", Fraction(100_000)), ("2", Fraction(2_000_000)),
     ("0.0000005", Fraction(1, 2)), (Decimal("0.05"), Fraction(50_000)), (3, Fraction(3_000_000)),
     ("0", Fraction(0))],
)
def test_dollars_to_micro(value, expected):
    assert dollars_to_micro(value) == expected


def test_dollars_to_micro_rejects():
    with pytest.raises(TypeError):
        dollars_to_micro(0.1)  # type: ignore[arg-type]  # the one float literal: it is refused
    with pytest.raises(TypeError):
        dollars_to_micro(True)  # type: ignore[arg-type]
    for bad in ("-0.1", "nan", "inf", "1e-3", "", " 1", Decimal("NaN"), Decimal("-Infinity"),
                Decimal("-1"), -1):
        with pytest.raises(ValueError):
            dollars_to_micro(bad)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=12))
def test_decimal_text_is_exact(units, decimals):
    amount = Fraction(units, 10**decimals)  # micro-dollars, possibly sub-micro
    text = micro_to_decimal_text(amount)
    assert dollars_to_micro(text) == amount
    assert len(text.split(".")[1]) >= 6


def test_decimal_text_refuses_non_terminating():
    assert micro_to_decimal_text(Fraction(25_000)) == "0.025000"
    with pytest.raises(ValueError):
        micro_to_decimal_text(Fraction(1, 3))
