"""Every export's exact bytes, pinned: the same data gives the same file, on both engines.

The rows are written straight into the tables (fixed ids and times), so nothing in them
depends on the clock. They include what an export must get exactly right: a piece split at
a price change, half-micro-dollar ties (rounded half to even), microsecond times, an open
interval cut at the range's end, lifetime overruns, text that CSV must quote and JSON must
escape, and rows outside the range. Each export is pinned by its SHA-256; the plain usage
CSV is also spelled out, to show what is pinned.

Chunks of 2 rows as well as the default: every chunk boundary then falls inside the data
(Parquet writes one row group per chunk, so those bytes depend on where chunks end).

Parquet bytes also depend on pyarrow's version (the writer names itself in the footer):
after upgrading pyarrow, re-pin from a checkout whose export code is unchanged.
"""

import hashlib

import pytest
from sqlalchemy import insert, update

from metering.exports import columns, formats, service
from metering.invoices.models import Invoice, InvoiceLine
from metering.settings import load_settings
from metering.settlements.models import Settlement
from metering.usage.models import UsageExtension, UsageInterval
from tests.conftest import ADMIN_TOKEN
from tests.exports.conftest import JAN, PRICING, export

H = 3_600_000_000  # an hour in microseconds
JAN_10 = 1_768_003_200_000_000  # 2026-01-10T00:00:00Z
WEIRD = 'ws,"b"\nné'  # a comma, quotes, a newline and a non-ASCII letter


def at(day: int, hour: float = 0) -> int:
    """2026-01-<day> plus ``hour`` hours, in microseconds."""
    return JAN_10 + (day - 10) * 24 * H + round(hour * H)


INTERVALS = [  # workspace, deployment, sandbox, template, start, end, lifetime_end
    ("ws_a", "dep_1", "sb_1", "giga-mini", at(10, 10), at(10, 11.5), at(10, 10.25)),  # an overrun
    ("ws_a", "dep_1", "sb_2", "giga-standard", at(15, 11), at(15, 13) + 1_200_500_000, None),  # price change
    ("ws_a", "dep_2", "sb_3", "giga-mini", at(5) + 1, at(5) + 1 + 18_000, None),  # 0.5 micro: rounds to 0
    ("ws_a", "dep_2", "sb_4", "giga-mini", at(5, 1), at(5, 1) + 54_000, None),  # 1.5 micro: rounds to 2
    ("ws_a", "dep_2", "sb_5", "giga-mini", at(20), at(20) + 180_000, None),  # 6.5 (at 0.13/h): 6
    ("ws_a", "dep_2", "sb_6", "giga-mini", at(20, 1), at(20, 1) + 540_000, None),  # 19.5: 20
    ("ws_a", "dep_1", "sb_7", "giga-pro", at(31, 23), None, at(31, 23.25)),  # open: cut at the end
    ("ws_a", "dep_3", "sb_8", "linux-toolkit-standard", at(1), at(1, 0.5) + 7, at(1, 0.25)),
    (WEIRD, "dép", "sb 9", "giga-max", at(12, 8), at(12, 9), at(12, 8.5)),
    ("ws_a", "dep_1", "sb_10", "giga-mini", at(32, 1), at(32, 2), None),  # February: not exported
    ("ws_c", "dep_1", "sb_11", "giga-max", at(9, 23), at(10, 1), None),
]
EXTENSIONS = [  # workspace, deployment, sandbox, template, time, count
    ("ws_a", "dep_1", "sb_1", "giga-mini", at(10, 10.1), 2),
    ("ws_a", "dep_1", "sb_2", "giga-standard", at(15, 12.5) + 123_456, 3),  # after the price change
    ("ws_a", "dep_2", "sb_3", "giga-pro", at(5) + 1, 1),
    (WEIRD, "dép", "sb 9", "giga-max", at(12, 8.2), 4),
    ("ws_a", "dep_1", "sb_10", "giga-mini", at(32, 1.1), 1),  # February
]


def settlement(id_, ws, created, **extra):
    row = dict(id=id_, network="eip155:8453", chain_id=8453, transaction="0x" + "ab" * 32, payer="0x" + "11" * 20,
               pay_to="0x" + "22" * 20, amount=500_000, nonce=id_ + "_nonce", valid_before=1_900_000_000,
               x402_version=2, purpose_kind="credit", purpose="{}", workspace_id=ws, status="confirmed",
               block_number=123, block_hash="0x" + "44" * 32, log_index=7, created_at=created, updated_at=created,
               confirmed_at=created + 1_500_000)
    return {**row, **extra}


SETTLEMENTS = [
    settlement("stl_1", "ws_a", at(11, 1)),
    settlement("stl_2", WEIRD, at(11, 2) + 1, status="pending", block_number=None, block_hash=None,
               log_index=None, confirmed_at=None, transaction="0x" + "cd" * 32),
    settlement("stl_3", "ws_a", at(11, 3), purpose_kind="invoice", invoice_id="inv_1", amount=250_001,
               transaction="0x" + "ef" * 32),
]
INVOICES = [
    dict(id="inv_1", workspace_id="ws_a", period_start=at(1), period_end=at(32), status="draft",
         subtotal=1_234_567, credits=34_567, total=1_200_000, created_at=at(2), updated_at=at(2),
         carried_credit=4_567),
    dict(id="inv_2", workspace_id=WEIRD, period_start=at(1), period_end=at(32), status="draft",
         subtotal=5, total=5, created_at=at(3) + 9, updated_at=at(3) + 9),
]
LINES = [
    dict(invoice_id="inv_1", position=0, kind="running", deployment_id="dep_1", template="giga-mini",
         quantity=5_400_000_001, unit_price="0.1", amount=150_000, description="giga-mini running"),
    dict(invoice_id="inv_1", position=1, kind="adjustment", usage_kind="extension", deployment_id="dep_1",
         template="giga-mini", quantity=2, unit_price=None, amount=1_084_567, description='late, "quoted", text',
         original_period_start=at(1) - 31 * 24 * H),
    dict(invoice_id="inv_2", position=0, kind="extension", deployment_id="dép", template="giga-max", quantity=1,
         unit_price="0.2", amount=5, description="line\r\nbreak"),
]

# The plain usage CSV (workspace ws_a, bill_beyond = true), spelled out.
WS_A_CSV = (
    "kind,workspace_id,deployment_id,sandbox_id,template,start,end,seconds,extensions,unit_price,amount\r\n"
    "running,ws_a,dep_3,sb_8,linux-toolkit-standard,2026-01-01T00:00:00Z,2026-01-01T00:30:00.000007Z,"
    "1800.000007,,0.200000,0.100000\r\n"
    "running,ws_a,dep_2,sb_3,giga-mini,2026-01-05T00:00:00.000001Z,2026-01-05T00:00:00.018001Z,0.018000,,"
    "0.100000,0.000000\r\n"
    "running,ws_a,dep_2,sb_4,giga-mini,2026-01-05T01:00:00Z,2026-01-05T01:00:00.054000Z,0.054000,,0.100000,"
    "0.000002\r\n"
    "running,ws_a,dep_1,sb_1,giga-mini,2026-01-10T10:00:00Z,2026-01-10T11:30:00Z,5400.000000,,0.100000,"
    "0.150000\r\n"
    "running,ws_a,dep_1,sb_2,giga-standard,2026-01-15T11:00:00Z,2026-01-15T12:00:00Z,3600.000000,,0.200000,"
    "0.200000\r\n"
    "running,ws_a,dep_1,sb_2,giga-standard,2026-01-15T12:00:00Z,2026-01-15T13:20:00.500000Z,4800.500000,,"
    "0.217500,0.290030\r\n"
    "running,ws_a,dep_2,sb_5,giga-mini,2026-01-20T00:00:00Z,2026-01-20T00:00:00.180000Z,0.180000,,0.130000,"
    "0.000006\r\n"
    "running,ws_a,dep_2,sb_6,giga-mini,2026-01-20T01:00:00Z,2026-01-20T01:00:00.540000Z,0.540000,,0.130000,"
    "0.000020\r\n"
    "running,ws_a,dep_1,sb_7,giga-pro,2026-01-31T23:00:00Z,2026-02-01T00:00:00Z,3600.000000,,0.370000,"
    "0.370000\r\n"
    "extension,ws_a,dep_2,sb_3,giga-pro,2026-01-05T00:00:00.000001Z,,,1,0.100000,0.100000\r\n"
    "extension,ws_a,dep_1,sb_1,giga-mini,2026-01-10T10:06:00Z,,,2,0.025000,0.050000\r\n"
    "extension,ws_a,dep_1,sb_2,giga-standard,2026-01-15T12:30:00.123456Z,,,3,0.050000,0.150000\r\n"
)

# The first 16 hex digits of each export's SHA-256, taken before the exports read in bulk:
# (bill_beyond, chunk rows) -> {case: digest}.  CSV and NDJSON do not depend on the chunks.
CHUNK_ROWS = service.CHUNK_ROWS
PINNED: dict[tuple[bool, int], dict[str, str]] = {
    (True, CHUNK_ROWS): {
        "usage.csv": "76637d97e1e10864", "usage.csv.ws_a": "d04d99b29768cec1",
        "usage.csv.clipped": "89b9042ada628b7b",
        "usage.ndjson": "33c4e14a888affd7", "usage.ndjson.ws_a": "93c6a488c3b1d2b1",
        "usage.ndjson.clipped": "20afa9298e7c52ec",
        "usage.parquet": "d1a3e532ab0b70dd", "usage.parquet.ws_a": "c99806bed5b58831",
        "usage.parquet.clipped": "02aeff716ee9441d",
        "invoices.csv": "07b8a319eb5b0d25", "invoices.ndjson": "0b1d04a8640874bf",
        "invoices.parquet": "d3814a55e13edac2",
        "invoice_lines.csv": "a3067f34d8bfca00", "invoice_lines.ndjson": "68a186f519257a54",
        "invoice_lines.parquet": "fd4beb8bbb839609",
        "settlements.csv": "800a82f0bcc392af", "settlements.ndjson": "4079f106a6024a65",
        "settlements.parquet": "0ca8362ac1f75ffb",
        "overruns.csv": "e5dbb392ae7384eb", "overruns.csv.ws_a": "5257a5fd68bd4276",
        "overruns.csv.clipped": "5bdbf03d184c1067",
        "overruns.ndjson": "541633e5e41ed169", "overruns.ndjson.ws_a": "7162c2de33f09d3f",
        "overruns.ndjson.clipped": "45aa6c93a61d8d58",
        "overruns.parquet": "ece39747ef016448", "overruns.parquet.ws_a": "33a97be236d0408a",
        "overruns.parquet.clipped": "f6e616e64a4c083c",
    },
    (True, 2): {
        "usage.csv": "76637d97e1e10864", "usage.csv.ws_a": "d04d99b29768cec1",
        "usage.csv.clipped": "89b9042ada628b7b",
        "usage.ndjson": "33c4e14a888affd7", "usage.ndjson.ws_a": "93c6a488c3b1d2b1",
        "usage.ndjson.clipped": "20afa9298e7c52ec",
        "usage.parquet": "588764b29fa95a39", "usage.parquet.ws_a": "f7aef482aceed86c",
        "usage.parquet.clipped": "a4dce403f6cefeea",
        "invoices.csv": "07b8a319eb5b0d25", "invoices.ndjson": "0b1d04a8640874bf",
        "invoices.parquet": "d3814a55e13edac2",
        "invoice_lines.csv": "a3067f34d8bfca00", "invoice_lines.ndjson": "68a186f519257a54",
        "invoice_lines.parquet": "8607a80bbfbb8cc9",
        "settlements.csv": "800a82f0bcc392af", "settlements.ndjson": "4079f106a6024a65",
        "settlements.parquet": "fb17231414eee12a",
        "overruns.csv": "e5dbb392ae7384eb", "overruns.csv.ws_a": "5257a5fd68bd4276",
        "overruns.csv.clipped": "5bdbf03d184c1067",
        "overruns.ndjson": "541633e5e41ed169", "overruns.ndjson.ws_a": "7162c2de33f09d3f",
        "overruns.ndjson.clipped": "45aa6c93a61d8d58",
        "overruns.parquet": "9b6fb5775a2618d9", "overruns.parquet.ws_a": "9fc18cb3dcfea5bb",
        "overruns.parquet.clipped": "f6e616e64a4c083c",
    },
    (False, CHUNK_ROWS): {
        "usage.csv": "7c07ee849a3ef3c1", "usage.csv.ws_a": "adcec458489f2828",
        "usage.csv.clipped": "81af99fa8d7ed9c5",
        "usage.ndjson": "1a09b1bbe2d2d2bd", "usage.ndjson.ws_a": "8d74694da3bd4c35",
        "usage.ndjson.clipped": "dff8dd2a952bfa74",
        "usage.parquet": "3119b0e65386b7a0", "usage.parquet.ws_a": "6cd5c8e9e9eaf92d",
        "usage.parquet.clipped": "ab2e03eeaea8d089",
        "invoices.csv": "07b8a319eb5b0d25", "invoices.ndjson": "0b1d04a8640874bf",
        "invoices.parquet": "d3814a55e13edac2",
        "invoice_lines.csv": "a3067f34d8bfca00", "invoice_lines.ndjson": "68a186f519257a54",
        "invoice_lines.parquet": "fd4beb8bbb839609",
        "settlements.csv": "800a82f0bcc392af", "settlements.ndjson": "4079f106a6024a65",
        "settlements.parquet": "0ca8362ac1f75ffb",
        "overruns.csv": "2b1b4478e0c66524", "overruns.csv.ws_a": "4bc3aff82663ef56",
        "overruns.csv.clipped": "162139b4e07d9e3e",
        "overruns.ndjson": "0d597cc5f462aee0", "overruns.ndjson.ws_a": "e3dbfa6c03b7ef0c",
        "overruns.ndjson.clipped": "57fe74b057025357",
        "overruns.parquet": "a8c31ae96a4dacc9", "overruns.parquet.ws_a": "3b2dd3c801c5c5e4",
        "overruns.parquet.clipped": "d02eabce49184850",
    },
    (False, 2): {
        "usage.csv": "7c07ee849a3ef3c1", "usage.csv.ws_a": "adcec458489f2828",
        "usage.csv.clipped": "81af99fa8d7ed9c5",
        "usage.ndjson": "1a09b1bbe2d2d2bd", "usage.ndjson.ws_a": "8d74694da3bd4c35",
        "usage.ndjson.clipped": "dff8dd2a952bfa74",
        "usage.parquet": "7ae93844664340d6", "usage.parquet.ws_a": "8c45656e978135d3",
        "usage.parquet.clipped": "c0c71174079ad97b",
        "invoices.csv": "07b8a319eb5b0d25", "invoices.ndjson": "0b1d04a8640874bf",
        "invoices.parquet": "d3814a55e13edac2",
        "invoice_lines.csv": "a3067f34d8bfca00", "invoice_lines.ndjson": "68a186f519257a54",
        "invoice_lines.parquet": "8607a80bbfbb8cc9",
        "settlements.csv": "800a82f0bcc392af", "settlements.ndjson": "4079f106a6024a65",
        "settlements.parquet": "fb17231414eee12a",
        "overruns.csv": "2b1b4478e0c66524", "overruns.csv.ws_a": "4bc3aff82663ef56",
        "overruns.csv.clipped": "162139b4e07d9e3e",
        "overruns.ndjson": "0d597cc5f462aee0", "overruns.ndjson.ws_a": "e3dbfa6c03b7ef0c",
        "overruns.ndjson.clipped": "57fe74b057025357",
        "overruns.parquet": "9c9eaae9429299b9", "overruns.parquet.ws_a": "626ecc67a80035eb",
        "overruns.parquet.clipped": "d02eabce49184850",
    },
}


@pytest.fixture(params=[True, False], ids=["bill_beyond", "not_beyond"])
def bill_beyond(request):
    return request.param


@pytest.fixture
def settings(db_url, tmp_path, bill_beyond):
    path = tmp_path / "pricing.toml"
    path.write_text(PRICING)
    return load_settings(environ={}, database_url=db_url, admin_token=ADMIN_TOKEN, pricing_file=str(path),
                        reports_dir=str(tmp_path / "reports"), scheduler={"enabled": False},
                        lifetime={"tolerance_seconds": 300, "bill_beyond": bill_beyond})


async def fill(db):
    names = ("workspace_id", "deployment_id", "sandbox_id", "template")
    async with db.write() as session:
        await session.execute(insert(UsageInterval), [
            dict(zip(names + ("start", "end", "lifetime_end"), row)) for row in INTERVALS])
        await session.execute(insert(UsageExtension), [
            dict(zip(names + ("time", "count"), row)) for row in EXTENSIONS])
        await session.execute(insert(Invoice), INVOICES)
        await session.execute(insert(InvoiceLine), LINES)
        # Finalized after its lines: a finalized invoice is immutable (a trigger says so).
        await session.execute(update(Invoice).where(Invoice.id == "inv_1").values(
            status="finalized", number="INV-0001", finalized_at=at(2, 1), updated_at=at(2, 1)))
        await session.execute(insert(Settlement), SETTLEMENTS)


def cases():
    for dataset in columns.DATASETS:
        for fmt in columns.FORMATS:
            yield f"{dataset}.{fmt}", dict(dataset=dataset, format=fmt, **JAN)
            if dataset in ("usage", "overruns"):
                yield f"{dataset}.{fmt}.ws_a", dict(dataset=dataset, format=fmt, workspace_id="ws_a", **JAN)
                yield f"{dataset}.{fmt}.clipped", dict(dataset=dataset, format=fmt, start="2026-01-10T10:30:00Z",
                                                       end="2026-01-20T00:00:00.1Z")


def count_calls(module, name, calls):
    def counted(*args):
        calls.append(name)
        return real(*args)

    real = getattr(module, name)
    return counted


@pytest.mark.parametrize("chunk_rows", [2, CHUNK_ROWS])
async def test_export_bytes_are_pinned(client, admin, db, bill_beyond, chunk_rows, monkeypatch):
    monkeypatch.setattr(service, "CHUNK_ROWS", chunk_rows)
    # The usage export's two ways to a chunk's bytes: a column at a time, or (for the text
    # that needs quoting or escaping) row by row. Both are pinned here.
    per_row: list[str] = []
    monkeypatch.setattr(service, "_encode", count_calls(service, "_encode", per_row))
    monkeypatch.setattr(formats, "rows_of", count_calls(formats, "rows_of", per_row))
    await fill(db)
    got = {}
    for name, params in cases():
        per_row.clear()
        body = (await export(client, admin, params.pop("dataset"), **params)).content
        got[name] = hashlib.sha256(body).hexdigest()[:16]
        if name == "usage.csv.ws_a" and bill_beyond:
            assert body.decode() == WS_A_CSV
        if name.startswith("usage.") and name.endswith(".ws_a"):
            assert per_row == [], name  # all plain: columns only
        elif name in ("usage.csv", "usage.ndjson"):
            assert per_row, name  # the odd workspace's rows
    assert got == PINNED[bill_beyond, chunk_rows]
