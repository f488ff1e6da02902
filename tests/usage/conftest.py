import pytest

from metering.settings import load_settings
from tests.conftest import ADMIN_TOKEN

# The default book, then a price change at 2026-03-01T12:00Z (mid-day, after a month end).
PRICING = """
run_tiers = ["0.50", "1.00", "2.00"]

[[versions]]
effective_from = "2020-01-01T00:00:00Z"
[versions.prices.giga-mini]
hourly = "0.10"
extension = "0.025"
[versions.prices.giga-standard]
hourly = "0.20"
extension = "0.05"
[versions.prices.giga-pro]
hourly = "0.40"
extension = "0.10"
[versions.prices.giga-max]
hourly = "0.80"
extension = "0.20"
[versions.prices.linux-toolkit-standard]
hourly = "0.20"
extension = "0.05"

[[versions]]
effective_from = "2026-03-01T12:00:00Z"
[versions.prices.giga-mini]
hourly = "0.13"
extension = "0.03"
[versions.prices.giga-standard]
hourly = "0.20"
extension = "0.05"
[versions.prices.giga-pro]
hourly = "0.37"
extension = "0.11"
[versions.prices.giga-max]
hourly = "0.80"
extension = "0.20"
[versions.prices.linux-toolkit-standard]
hourly = "0.20"
extension = "0.05"
"""


@pytest.fixture
def settings(db_url, tmp_path):
    pricing = tmp_path / "pricing.toml"
    pricing.write_text(PRICING)
    return load_settings(
        environ={}, database_url=db_url, admin_token=ADMIN_TOKEN, pricing_file=str(pricing),
        reports_dir=str(tmp_path / "reports"), scheduler={"enabled": False},
    )
