"""The price book: versions by effective_from, documents, the default config file."""

import tomllib
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from metering.core.pricing import (
    PriceBook,
    PriceVersion,
    TierPrice,
    parse_price_book,
    price_book_from_toml,
    price_version_from_doc,
    price_version_to_doc,
)
from metering.core.timeutil import parse_time

T = parse_time
CONFIG = Path(__file__).resolve().parents[2] / "config" / "pricing.toml"


def version(at: str, **hourly: int) -> PriceVersion:
    return PriceVersion(T(at), {t.replace("_", "-"): TierPrice(Fraction(h), Fraction(h // 4))
                                for t, h in hourly.items()})


def test_default_book_matches_contract():
    book = parse_price_book(tomllib.loads(CONFIG.read_text()))
    v = book.at(T("2026-01-01T00:00:00Z"))
    assert v is not None and v.effective_from == T("2020-01-01T00:00:00Z")
    expected = {
        "giga-mini": ("0.10", "0.025"), "giga-standard": ("0.20", "0.05"),
        "giga-pro": ("0.40", "0.10"), "giga-max": ("0.80", "0.20"),
        "linux-toolkit-standard": ("0.20", "0.05"),
    }
    assert {t: (p.hourly, p.extension) for t, p in v.prices.items()} == {
        t: (Fraction(Decimal(h)) * 10**6, Fraction(Decimal(e)) * 10**6)
        for t, (h, e) in expected.items()
    }
    assert v.run_tiers == (500_000, 1_000_000, 2_000_000)
    assert book.at(T("2019-12-31T23:59:59Z")) is None
    assert price_book_from_toml(CONFIG.read_text()) == book


def test_at_and_segments():
    v1 = version("2026-01-01T00:00:00Z", giga_mini=100_000)
    v2 = version("2026-02-01T00:00:00Z", giga_mini=200_000, giga_pro=400_000)
    book = PriceBook([v2, v1])  # any order in, sorted inside
    assert book.versions == (v1, v2)
    assert book.at(T("2025-12-31T23:59:59.999999Z")) is None
    assert book.at(T("2026-01-01T00:00:00Z")) is v1
    assert book.at(T("2026-01-31T23:59:59.999999Z")) is v1
    assert book.at(T("2026-02-01T00:00:00Z")) is v2
    assert book.templates == {"giga-mini", "giga-pro"}
    assert not book.knows("giga-pro", T("2026-01-15T00:00:00Z"))
    assert book.knows("giga-pro", T("2026-02-15T00:00:00Z"))
    a, b, c = T("2025-12-31T00:00:00Z"), T("2026-01-01T00:00:00Z"), T("2026-02-01T00:00:00Z")
    d = T("2026-02-02T00:00:00Z")
    assert book.segments(a, d) == [(a, b, None), (b, c, v1), (c, d, v2)]
    assert book.segments(b, c) == [(b, c, v1)]
    assert book.segments(c, b) == []


def test_versions_are_unique_and_immutable():
    v1 = version("2026-01-01T00:00:00Z", giga_mini=100_000)
    with pytest.raises(ValueError):
        PriceBook([v1, version("2026-01-01T00:00:00Z", giga_mini=1)])
    book = PriceBook([v1])
    with pytest.raises(ValueError):
        book.with_version(version("2026-01-01T00:00:00Z", giga_mini=1))
    later = version("2026-03-01T00:00:00Z", giga_mini=1)
    assert book.with_version(later).versions == (v1, later)
    assert book.versions == (v1,)  # with_version made a new book
    with pytest.raises(TypeError):
        v1.prices["giga-mini"] = TierPrice(Fraction(0), Fraction(0))  # type: ignore[index]
    with pytest.raises(ValueError):
        TierPrice(Fraction(-1), Fraction(0))


def test_version_document_round_trip_is_exact():
    doc = {
        "effective_from": "2026-03-01T00:00:00+01:00",
        "prices": {"giga-mini": {"hourly": "0.1", "extension": "0.0000005"}},
        "run_tiers": ["0.5", "1"],
    }
    v = price_version_from_doc(doc)
    assert v.prices["giga-mini"].extension == Fraction(1, 2)
    assert v.run_tiers == (500_000, 1_000_000)
    out = price_version_to_doc(v)
    assert out == {
        "effective_from": "2026-02-28T23:00:00Z",
        "prices": {"giga-mini": {"hourly": "0.100000", "extension": "0.0000005"}},
        "run_tiers": ["0.500000", "1.000000"],
    }
    assert price_version_from_doc(out) == v


@pytest.mark.parametrize(
    "doc",
    [
        {"prices": {"giga-mini": {"hourly": "0.1", "extension": "0.1"}}},
        {"effective_from": "2026-01-01", "prices": {"x": {"hourly": "1", "extension": "1"}}},
        {"effective_from": "2026-01-01T00:00:00Z", "prices": {}},
        {"effective_from": "2026-01-01T00:00:00Z", "prices": {"x": {"hourly": "1"}}},
        {"effective_from": "2026-01-01T00:00:00Z",
         "prices": {"x": {"hourly": 0.1, "extension": "1"}}},  # a TOML/JSON float
        {"effective_from": "2026-01-01T00:00:00Z",
         "prices": {"x": {"hourly": "-1", "extension": "1"}}},
        {"effective_from": "2026-01-01T00:00:00Z",
         "prices": {"x": {"hourly": "1", "extension": "1", "hourly_typo": "2"}}},
        {"effective_from": "2026-01-01T00:00:00Z",
         "prices": {"x": {"hourly": "1", "extension": "1"}}, "run_tiers": ["0.0000001"]},
    ],
)
def test_bad_version_documents(doc):
    with pytest.raises(ValueError):
        price_version_from_doc(doc)


def test_book_document_shape():
    book = price_book_from_toml(
        """
        run_tiers = ["0.25"]
        [[versions]]
        effective_from = 2026-01-01T00:00:00Z   # a native TOML datetime works too
        [versions.prices.giga-mini]
        hourly = 0.10                           # bare TOML floats are read as Decimal
        extension = "0.025"
        [[versions]]
        effective_from = "2026-02-01T00:00:00Z"
        run_tiers = ["3"]
        [versions.prices.giga-mini]
        hourly = "0.30"
        extension = "0.075"
        """
    )
    first, second = book.versions
    assert first.prices["giga-mini"].hourly == 100_000 and first.run_tiers == (250_000,)
    assert second.prices["giga-mini"].extension == 75_000 and second.run_tiers == (3_000_000,)
    with pytest.raises(ValueError):
        parse_price_book({"versions": []})
    with pytest.raises(ValueError):
        parse_price_book({"versions": [], "currency": "EUR"})
    with pytest.raises(ValueError):  # plain tomllib gives floats: refused, not rounded
        parse_price_book(tomllib.loads(
            '[[versions]]\neffective_from = "2026-01-01T00:00:00Z"\n'
            '[versions.prices.a]\nhourly = 0.1\nextension = "0"\n'))
