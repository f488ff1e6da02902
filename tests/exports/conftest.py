import csv
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metering.settings import load_settings
from tests.conftest import ADMIN_TOKEN
from tests.factories import BATCH

# The default book, then a price change on 2026-01-15T12:00Z, inside January.
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
effective_from = "2026-01-15T12:00:00Z"
[versions.prices.giga-mini]
hourly = "0.13"
extension = "0.03"
[versions.prices.giga-standard]
hourly = "0.2175"
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

JAN = {"start": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00Z"}
JAN_PERIOD = {"period_start": JAN["start"], "period_end": JAN["end"]}


@pytest.fixture
def settings(db_url, tmp_path):
    pricing = tmp_path / "pricing.toml"
    pricing.write_text(PRICING)
    return load_settings(
        environ={}, database_url=db_url, admin_token=ADMIN_TOKEN, pricing_file=str(pricing),
        reports_dir=str(tmp_path / "reports"), scheduler={"enabled": False},
    )


@pytest.fixture
async def auth(make_token):
    return await make_token("events:write", "invoices:read", "invoices:write", "exports:read")


async def ingest(client, auth, events):
    for lo in range(0, len(events), 5000):
        resp = await client.post("/v1/events", json=events[lo : lo + 5000], headers={**auth, **BATCH})
        assert resp.status_code == 202, resp.text


async def bill(client, auth, period):
    resp = await client.post("/v1/billing-runs", json=period, headers=auth)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def export(client, auth, dataset, **params):
    resp = await client.get(f"/v1/exports/{dataset}", params=params, headers=auth)
    assert resp.status_code == 200, resp.text
    return resp


def read_csv(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode(), newline="")))


def read_parquet(body: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(body))
