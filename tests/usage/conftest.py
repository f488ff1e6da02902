import pytest

from tests.factories import pricing_toml, settings_with_pricing

# The default book, then a price change at 2026-03-01T12:00Z (mid-day, after a month end).
PRICING = pricing_toml("2026-03-01T12:00:00Z", {"giga-mini": ("0.13", "0.03"), "giga-pro": ("0.37", "0.11")})


@pytest.fixture
def settings(db_url, tmp_path):
    return settings_with_pricing(db_url, tmp_path, PRICING)
