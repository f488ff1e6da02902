"""The bulk path against the per-row one it replaces: value for value, byte for byte.

Every kernel in ``columnar``, the rounding in ``round_micro_columns``, the pricing in
``usage_columns`` and each encoder's ``batch`` must give exactly what the per-row function
gives for the same input, or decline (None) so that the per-row function does it.
"""

import csv
import io
from fractions import Fraction

import msgspec
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.core.lifecycle import LifetimePolicy
from metering.core.money import format_money, round_micro, round_micro_columns
from metering.core.pricing import PriceBook, PriceVersion, TierPrice
from metering.core.timeutil import format_time
from metering.exports import columnar
from metering.exports.columns import USAGE
from metering.exports.fetch import query_schema
from metering.exports.formats import make_encoder
from metering.exports.usage import usage_parts

YEAR_10000 = 253_402_300_800_000_000
JAN_2026 = 1_767_225_600_000_000
HOUR = 3_600_000_000
PLAIN = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='",\\'), max_size=12)
ANY_TEXT = st.text(max_size=12)  # quotes, commas, newlines, controls, non-ASCII
EXAMPLES = settings(max_examples=150, deadline=None)


def int64(values):
    return pa.array(values, pa.int64())


@EXAMPLES
@given(st.lists(st.none() | st.integers(0, 2**63 - 1), max_size=20))
def test_fixed6_is_format_money(values):
    assert columnar.fixed6(int64(values)).to_pylist() == [None if v is None else format_money(v) for v in values]


def test_fixed6_declines_negative_values():
    assert columnar.fixed6(int64([5, -1])) is None


@EXAMPLES
@given(st.lists(st.none() | st.integers(0, YEAR_10000 - 1) | st.integers(JAN_2026, JAN_2026 + 40 * 24 * HOUR),
                max_size=20))
def test_rfc3339_is_format_time(values):
    assert columnar.rfc3339(int64(values)).to_pylist() == [None if v is None else format_time(v) for v in values]


def test_rfc3339_declines_what_it_cannot_write():
    assert columnar.rfc3339(int64([JAN_2026, -1])) is None
    assert columnar.rfc3339(int64([YEAR_10000])) is None


@EXAMPLES
@given(ANY_TEXT | PLAIN)
def test_plain_text_needs_no_quoting_or_escaping(text):
    if columnar.is_plain(pa.array([text, "x"])):
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerow([text, "x"])
        assert out.getvalue() == f"{text},x\r\n"
        assert msgspec.json.encode(text) == f'"{text}"'.encode()
    else:
        assert set(text) & set(' ",\\') or not text.isascii() or not text.isprintable()


@EXAMPLES
@given(st.lists(st.tuples(st.integers(0, 2**62 - 1), st.integers(1, 2**62 - 1)), max_size=20))
def test_round_micro_columns_is_round_micro(pairs):
    got = round_micro_columns(int64([n for n, _ in pairs]), int64([d for _, d in pairs]))
    assert got.type == pa.int64()
    assert got.to_pylist() == [round_micro(Fraction(n, d)) for n, d in pairs]


def test_round_micro_columns_ties_go_to_even():
    got = round_micro_columns(int64([1, 3, 5, 7, 2, 6]), int64([2, 2, 2, 2, 4, 4]))
    assert got.to_pylist() == [0, 2, 2, 4, 0, 2]


# Export rows of the usage dataset: text (plain or not), nullable numbers.
def usage_rows(text):
    times = st.none() | st.integers(JAN_2026, JAN_2026 + 40 * 24 * HOUR)
    micros = st.none() | st.integers(0, 10**15)
    return st.lists(st.tuples(text, text, text, text, text, times, times, micros, st.none() | st.integers(0, 96),
                              st.sampled_from(["0.100000", "0.000000000500", "12.345000"]), micros), max_size=8)


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
@EXAMPLES
@given(chunks=st.lists(usage_rows(PLAIN) | usage_rows(ANY_TEXT), max_size=3))
def test_encoders_write_the_same_bytes_from_columns(fmt, chunks):
    schema = columnar.typed_schema(USAGE)
    by_rows, by_columns = make_encoder(fmt, USAGE), make_encoder(fmt, USAGE)
    rows_out = [by_rows.begin()] + [by_rows.chunk(rows) for rows in chunks] + [by_rows.finish()]
    columns_out = [by_columns.begin()] + [by_columns.batch(columnar.batch_of_rows(rows, schema)) for rows in chunks] \
        + [by_columns.finish()]
    assert b"".join(columns_out) == b"".join(rows_out)


# Stored intervals and extensions against a book of three versions, one of which drops a
# template, and a price with no decimal text (a unit price the per-row path refuses to write).
BOOK = PriceBook([
    PriceVersion(JAN_2026, {"a": TierPrice(Fraction(100_000), Fraction(25_000)),
                            "b": TierPrice(Fraction(1, 3), Fraction(7, 2))}),
    PriceVersion(JAN_2026 + 5 * 24 * HOUR, {"a": TierPrice(Fraction(130_000), Fraction(30_000))}),
    PriceVersion(JAN_2026 + 9 * 24 * HOUR + 1, {"a": TierPrice(Fraction(217_500), Fraction(1)),
                                                "b": TierPrice(Fraction(10**10), Fraction(0))}),
])
TIMES = st.integers(JAN_2026 - HOUR, JAN_2026 + 12 * 24 * HOUR)
INTERVALS = st.lists(st.tuples(PLAIN, PLAIN, PLAIN, st.sampled_from(["a", "a", "b", "c"]), TIMES,
                               st.none() | st.integers(0, 3 * 24 * HOUR), st.none() | st.integers(-HOUR, 3 * HOUR)),
                     max_size=10)
EXTENSIONS = st.lists(st.tuples(PLAIN, PLAIN, PLAIN, st.sampled_from(["a", "a", "b", "c"]), TIMES,
                                st.integers(0, 96)), max_size=10)


def per_row(convert, raw):
    try:
        return convert(raw)
    except Exception as exc:  # noqa: BLE001 - the per-row path's error is the expected outcome
        return type(exc)


@EXAMPLES
@given(intervals=INTERVALS, extensions=EXTENSIONS, range_start=TIMES, length=st.integers(1, 12 * 24 * HOUR),
       bill_beyond=st.booleans(), tolerance=st.integers(0, HOUR))
def test_usage_columns_are_the_per_row_rows(intervals, extensions, range_start, length, bill_beyond, tolerance):
    end = range_start + length
    closed, opened, ext = usage_parts(BOOK, range_start, end, None, now=end - length // 3,
                                      lifetime=LifetimePolicy(tolerance, bill_beyond))
    stored = [(*iv[:5], None if iv[5] is None else iv[4] + iv[5], None if iv[6] is None else iv[4] + iv[6])
              for iv in intervals]
    for part, raw in [(closed, [iv for iv in stored if iv[5] is not None]),
                      (opened, [iv for iv in stored if iv[5] is None]), (ext, extensions)]:
        expected = per_row(part.convert, raw)
        got = part.columns(columnar.batch_of_rows(raw, query_schema(part.query)))
        if isinstance(expected, type):  # the per-row path refuses it: so must the columns
            assert got is None, expected
        else:
            assert got is not None and columnar.rows_of(got) == expected


def test_usage_columns_decline_what_they_cannot_price():
    closed, _, ext = usage_parts(BOOK, JAN_2026, JAN_2026 + HOUR, None, now=JAN_2026 + HOUR,
                                 lifetime=LifetimePolicy())
    interval = ("w", "d", "s", "a", JAN_2026, JAN_2026 + HOUR, None)
    schema = query_schema(closed.query)
    assert closed.columns(columnar.batch_of_rows([interval], schema)) is not None
    assert closed.columns(columnar.batch_of_rows([interval[:3] + ("c",) + interval[4:]], schema)) is None  # no price
    schema = query_schema(ext.query)
    assert ext.columns(columnar.batch_of_rows([("w", "d", "s", "a", JAN_2026, 0)], schema)) is None  # zero count
    # A price with twelve decimals over a long interval: past 64 bits, so the Fractions do it.
    fine = PriceBook([PriceVersion(0, {"a": TierPrice(Fraction(123_456_789_012, 10**6), Fraction(1))})])
    closed, _, _ = usage_parts(fine, JAN_2026, JAN_2026 + 1000 * HOUR, None, now=JAN_2026, lifetime=LifetimePolicy())
    long = [("w", "d", "s", "a", JAN_2026, JAN_2026 + 999 * HOUR, None)]
    assert closed.columns(columnar.batch_of_rows(long, query_schema(closed.query))) is None
    assert closed.convert(long)[0][-1] == round_micro(Fraction(123_456_789_012, 10**6) * 999)
