import csv
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.factories import BATCH, pricing_toml, settings_with_pricing

# The default book, then a price change on 2026-01-15T12:00Z, inside January.
PRICING = pricing_toml("2026-01-15T12:00:00Z", {
    "giga-mini": ("0.13", "0.03"), "giga-standard": ("0.2175", "0.05"), "giga-pro": ("0.37", "0.11")})

JAN = {"start": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00Z"}
JAN_PERIOD = {"period_start": JAN["start"], "period_end": JAN["end"]}


@pytest.fixture
def settings(db_url, tmp_path):
    return settings_with_pricing(db_url, tmp_path, PRICING)


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
