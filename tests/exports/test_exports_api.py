"""Exports through HTTP: datasets, formats, filters and who may see what."""

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pytest

from metering.exports import columns
from metering.settlements.models import Settlement
from tests.exports.conftest import JAN, JAN_PERIOD, bill, export, ingest, read_csv, read_parquet
from tests.factories import event


def names(dataset):
    return [c.name for c in columns.DATASETS[dataset]]


def lifecycle(ws="ws_1", dep="d1", sb="sb_a", template="giga-mini"):
    return [
        event("sandbox.running", "2026-01-10T10:00:00Z", workspace_id=ws, deployment_id=dep, sandbox_id=sb,
              template=template),
        event("sandbox.extended", "2026-01-10T10:10:00Z", workspace_id=ws, deployment_id=dep, sandbox_id=sb,
              template=template, minutes=30),
        event("sandbox.stopped", "2026-01-10T11:30:00Z", workspace_id=ws, deployment_id=dep, sandbox_id=sb),
    ]


async def test_usage_csv_rows_and_format(client, auth):
    await ingest(client, auth, lifecycle())
    resp = await export(client, auth, "usage", **JAN)
    assert resp.headers["content-type"].startswith("text/csv")
    assert 'filename="usage_2026-01-01_2026-02-01.csv"' in resp.headers["content-disposition"]
    body = resp.content
    # RFC 4180: CRLF after every record, the header first, in the documented order.
    assert body.endswith(b"\r\n") and body.count(b"\r\n") == 3 and b"\n" not in body.replace(b"\r\n", b"")
    assert body.split(b"\r\n")[0].decode().split(",") == names("usage")
    assert read_csv(body) == [
        {"kind": "running", "workspace_id": "ws_1", "deployment_id": "d1", "sandbox_id": "sb_a",
         "template": "giga-mini", "start": "2026-01-10T10:00:00Z", "end": "2026-01-10T11:30:00Z",
         "seconds": "5400.000000", "extensions": "", "unit_price": "0.100000", "amount": "0.150000"},
        {"kind": "extension", "workspace_id": "ws_1", "deployment_id": "d1", "sandbox_id": "sb_a",
         "template": "giga-mini", "start": "2026-01-10T10:10:00Z", "end": "", "seconds": "",
         "extensions": "2", "unit_price": "0.025000", "amount": "0.050000"},
    ]


async def test_usage_is_clipped_and_split_at_price_changes(client, auth):
    # giga-standard 0.20/h until 2026-01-15T12:00Z, then 0.2175/h; 11:00 -> 13:20.
    await ingest(client, auth, [
        event("sandbox.running", "2026-01-15T11:00:00Z", template="giga-standard"),
        event("sandbox.stopped", "2026-01-15T13:20:00.5Z"),
    ])
    rows = read_csv((await export(client, auth, "usage", start="2026-01-15T11:30:00Z",
                                  end="2026-01-16T00:00:00Z")).content)
    assert [(r["start"], r["end"], r["seconds"], r["unit_price"], r["amount"]) for r in rows] == [
        ("2026-01-15T11:30:00Z", "2026-01-15T12:00:00Z", "1800.000000", "0.200000", "0.100000"),
        # 4800.5 s at 0.2175/h = 0.290030208...: rounded once, on this row.
        ("2026-01-15T12:00:00Z", "2026-01-15T13:20:00.500000Z", "4800.500000", "0.217500", "0.290030"),
    ]


async def test_open_interval_is_cut_at_now_or_end(client, auth):
    hour_ago = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    started = hour_ago.strftime("%Y-%m-%dT%H:%M:%SZ")
    await ingest(client, auth, [event("sandbox.running", started, template="giga-pro")])
    before = datetime.now(timezone.utc)
    resp = await export(client, auth, "usage", start="2020-01-01T00:00:00Z", end="2100-01-01T00:00:00Z")
    [row] = read_csv(resp.content)
    as_of = resp.headers["x-export-as-of"]
    assert row["start"] == started and row["end"] == as_of
    assert before <= datetime.fromisoformat(as_of.replace("Z", "+00:00")) <= datetime.now(timezone.utc)
    # A range that ends before now cuts the running interval at its end.
    end = (hour_ago + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    [row] = read_csv((await export(client, auth, "usage", start="2020-01-01T00:00:00Z", end=end)).content)
    assert (row["end"], row["seconds"], row["amount"]) == (end, "1800.000000", "0.185000")


async def test_ndjson_and_parquet_carry_the_same_rows(client, auth):
    await ingest(client, auth, lifecycle() + lifecycle(ws="ws_2", template="giga-max"))
    rows = read_csv((await export(client, auth, "usage", **JAN)).content)
    resp = await export(client, auth, "usage", format="ndjson", **JAN)
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    lines = resp.content.decode().split("\n")
    assert lines[-1] == "" and len(lines) == len(rows) + 1
    objects = [json.loads(line) for line in lines[:-1]]
    assert [list(o) for o in objects] == [names("usage")] * len(rows)
    assert objects[0]["amount"] == rows[0]["amount"] and isinstance(objects[0]["amount"], str)
    # Running pieces first (by start), then extensions (by time).
    assert [o["kind"] for o in objects] == ["running", "running", "extension", "extension"]
    assert objects[2]["extensions"] == 2 and objects[0]["extensions"] is None
    assert [{k: ("" if v is None else str(v)) for k, v in o.items()} for o in objects] == rows

    resp = await export(client, auth, "usage", format="parquet", **JAN)
    table = read_parquet(resp.content)
    assert table.column_names == names("usage")
    schema = table.schema
    assert schema.field("amount").type == pa.decimal128(38, 6)
    assert schema.field("seconds").type == pa.decimal128(38, 6)
    assert schema.field("start").type == pa.timestamp("us", tz="UTC")
    assert schema.field("extensions").type == pa.int64()
    got = table.to_pylist()
    assert [r["amount"] for r in got] == [Decimal(r["amount"]) for r in rows]
    assert got[0]["start"] == datetime(2026, 1, 10, 10, tzinfo=timezone.utc)
    assert got[2]["end"] is None and got[2]["unit_price"] == Decimal("0.025")


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
async def test_empty_export_is_a_valid_file(client, auth, fmt):
    for dataset in columns.DATASETS:
        body = (await export(client, auth, dataset, format=fmt, **JAN)).content
        if fmt == "csv":
            assert body == (",".join(names(dataset)) + "\r\n").encode()
        elif fmt == "ndjson":
            assert body == b""
        else:
            table = read_parquet(body)
            assert table.num_rows == 0 and table.column_names == names(dataset)


async def test_invoices_and_lines(client, auth):
    await ingest(client, auth, lifecycle() + lifecycle(ws="ws_2", sb="sb_b"))
    await bill(client, auth, JAN_PERIOD)
    api = (await client.get("/v1/invoices", params={"workspace_id": "ws_1"}, headers=auth)).json()["items"][0]
    [inv] = read_csv((await export(client, auth, "invoices", workspace_id="ws_1", **JAN)).content)
    assert list(inv) == names("invoices")
    assert {k: inv[k] for k in ("id", "number", "workspace_id", "period_start", "period_end", "status", "subtotal",
                                "credits", "total", "amount_paid", "amount_due", "finalized_at")} == \
        {k: api[k] for k in ("id", "number", "workspace_id", "period_start", "period_end", "status", "subtotal",
                             "credits", "total", "amount_paid", "amount_due", "finalized_at")}
    assert inv["paid_at"] == "" and inv["voided_at"] == ""
    lines = read_csv((await export(client, auth, "invoice_lines", workspace_id="ws_1", **JAN)).content)
    assert [(ln["invoice_id"], ln["invoice_number"], ln["period_start"], ln["position"], ln["kind"],
             ln["quantity"], ln["unit_price"], ln["amount"]) for ln in lines] == [
        (api["id"], api["number"], api["period_start"], str(i), a["kind"], str(a["quantity"]), a["unit_price"],
         a["amount"]) for i, a in enumerate(api["lines"])]
    table = read_parquet((await export(client, auth, "invoice_lines", format="parquet", **JAN)).content)
    assert table.num_rows == 4 and table.schema.field("quantity").type == pa.decimal128(38, 6)
    assert sorted(table.column("quantity").to_pylist()) == [Decimal(2)] * 2 + [Decimal(5400)] * 2
    # Invoices are selected by period_start: February has none.
    feb = read_csv((await export(client, auth, "invoices", start="2026-01-01T00:00:01Z",
                                 end="2026-03-01T00:00:00Z")).content)
    assert feb == []


async def add_settlement(db, id_, ws, created, **extra):
    row = dict(id=id_, network="eip155:8453", chain_id=8453, transaction="0x" + "ab" * 32, payer="0x" + "11" * 20,
               pay_to="0x" + "22" * 20, amount=500_000, nonce="0x" + "33" * 32, valid_before=1_900_000_000,
               x402_version=2, purpose_kind="credit", purpose=json.dumps({"kind": "credit", "workspace_id": ws}),
               workspace_id=ws, status="confirmed", block_number=123, block_hash="0x" + "44" * 32, log_index=7,
               created_at=created, updated_at=created, confirmed_at=created + 1_500_000)
    row.update(extra)
    async with db.write() as session:
        session.add(Settlement(**row))


async def test_settlements(client, auth, db):
    jan10 = 1_768_003_200_000_000  # 2026-01-10T00:00:00Z
    await add_settlement(db, "stl_1", "ws_1", jan10)
    await add_settlement(db, "stl_2", "ws_2", jan10 + 1, nonce="0x" + "55" * 32, transaction="0x" + "cd" * 32,
                         status="pending", block_number=None, block_hash=None, log_index=None, confirmed_at=None)
    await add_settlement(db, "stl_3", "ws_1", jan10 + 40 * 86_400_000_000, nonce="0x" + "66" * 32,
                         transaction="0x" + "ef" * 32)  # February
    rows = read_csv((await export(client, auth, "settlements", **JAN)).content)
    assert list(rows[0]) == names("settlements")
    assert [(r["id"], r["created_at"], r["status"], r["block_number"], r["amount"], r["purpose_kind"],
             r["workspace_id"], r["log_index"]) for r in rows] == [
        ("stl_1", "2026-01-10T00:00:00Z", "confirmed", "123", "0.500000", "credit", "ws_1", "7"),
        ("stl_2", "2026-01-10T00:00:00.000001Z", "pending", "", "0.500000", "credit", "ws_2", ""),
    ]
    assert rows[0]["transaction"] == "0x" + "ab" * 32 and rows[0]["confirmed_at"] == "2026-01-10T00:00:01.500000Z"
    table = read_parquet((await export(client, auth, "settlements", format="parquet", workspace_id="ws_2",
                                       **JAN)).content)
    assert table.column("id").to_pylist() == ["stl_2"]
    assert table.column("amount").to_pylist() == [Decimal("0.5")]


async def test_bound_token_sees_only_its_workspace(client, auth, make_token, db):
    await ingest(client, auth, lifecycle() + lifecycle(ws="ws_2", sb="sb_b"))
    await bill(client, auth, JAN_PERIOD)
    await add_settlement(db, "stl_1", "ws_2", 1_768_003_200_000_000)
    bound = await make_token("exports:read", workspace_id="ws_1")
    for dataset in columns.DATASETS:
        rows = read_csv((await export(client, bound, dataset, **JAN)).content)
        assert {r["workspace_id"] for r in rows} <= {"ws_1"}, dataset
        own = read_csv((await export(client, bound, dataset, workspace_id="ws_1", **JAN)).content)
        assert own == rows
        resp = await client.get(f"/v1/exports/{dataset}", params={**JAN, "workspace_id": "ws_2"}, headers=bound)
        assert resp.status_code == 404, dataset
        assert resp.headers["content-type"] == "application/problem+json"
        assert "ws_1" not in resp.text
    assert len(read_csv((await export(client, bound, "usage", **JAN)).content)) == 2
    everyone = read_csv((await export(client, auth, "usage", **JAN)).content)
    assert {r["workspace_id"] for r in everyone} == {"ws_1", "ws_2"}


async def test_errors(client, auth, make_token):
    resp = await client.get("/v1/exports/nope", params=JAN, headers=auth)
    assert resp.status_code == 404 and resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["status"] == 404
    for params, field in [
        ({}, "start"),
        ({"start": JAN["start"]}, "end"),
        ({"start": "yesterday", "end": JAN["end"]}, "start"),
        ({"start": JAN["end"], "end": JAN["start"]}, "end"),
        ({**JAN, "format": "xlsx"}, "format"),
        ({**JAN, "workspace_id": "bad id!"}, "workspace_id"),
    ]:
        resp = await client.get("/v1/exports/usage", params=params, headers=auth)
        assert resp.status_code == 422, (params, resp.text)
        assert resp.json()["errors"][0]["field"] == field
    assert (await client.get("/v1/exports/usage", params=JAN)).status_code == 401
    other = await make_token("usage:read", "invoices:read")
    assert (await client.get("/v1/exports/usage", params=JAN, headers=other)).status_code == 403
