"""The exports reconcile with the invoices, on random lifecycles across two periods.

- Every invoice's lines in ``invoice_lines`` add up exactly to its ``total`` in ``invoices``.
- Per (workspace, deployment, template), the ``usage`` rows of a period add up to the
  invoice's running quantity (seconds) and extension count; the rows' amounts, each rounded
  once, stay within half a micro-dollar per row of the line's amount.

Read back with the csv module and with pyarrow, on SQLite and PostgreSQL.
"""

import json
import random
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from metering.settlements.models import Settlement
from tests.exports.conftest import bill, export, ingest, read_csv, read_parquet
from tests.factories import event

PERIODS = [("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"), ("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z")]
TEMPLATES = ["giga-mini", "giga-standard", "giga-pro", "giga-max", "linux-toolkit-standard"]
T0 = datetime(2025, 12, 28, tzinfo=timezone.utc)


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def random_events(rng: random.Random) -> list[dict]:
    """Sandboxes started and stopped at microsecond times from late December to March,
    some crossing the price change (Jan 15 12:00) or a month end, some left running."""
    events = []
    for w in range(3):
        ws = f"ws_{w}"
        for s in range(rng.randint(1, 5)):
            sb, dep, template = f"{ws}_sb{s}", f"dep_{rng.randint(0, 1)}", rng.choice(TEMPLATES)
            common = {"workspace_id": ws, "deployment_id": dep, "sandbox_id": sb}
            t = T0 + timedelta(microseconds=rng.randrange(50 * 86_400_000_000))
            for _ in range(rng.randint(1, 3)):
                events.append(event("sandbox.running", stamp(t), template=template, **common))
                t += timedelta(microseconds=rng.randrange(1, 20 * 86_400_000_000))
                if rng.random() < 0.6:
                    ext_at = t - timedelta(microseconds=rng.randrange(1, 3_600_000_000))
                    events.append(event("sandbox.extended", stamp(ext_at), template=template,
                                        minutes=15 * rng.randint(1, 4), **common))
                if rng.random() < 0.15:
                    break  # still running: each invoice cuts it at its period end
                events.append(event("sandbox.stopped", stamp(t), **common))
                t += timedelta(microseconds=rng.randrange(1, 5 * 86_400_000_000))
    rng.shuffle(events)  # arrival order must not matter
    return events


async def add_credit(db, ws: str, amount: int) -> None:
    now = 1_767_225_600_000_000  # 2026-01-01: confirmed before both periods are billed
    async with db.write() as session:
        session.add(Settlement(
            id=f"stl_{ws}", network="eip155:8453", chain_id=8453, transaction="0x" + "ab" * 32,
            payer="0x" + "11" * 20, pay_to="0x" + "22" * 20, amount=amount, nonce="0x" + "33" * 32,
            valid_before=1_900_000_000, x402_version=2, purpose_kind="credit",
            purpose=json.dumps({"kind": "credit", "workspace_id": ws}), workspace_id=ws, status="confirmed",
            block_number=1, block_hash="0x" + "44" * 32, log_index=0, created_at=now, updated_at=now,
            confirmed_at=now))


def check_lines_sum_to_totals(invoices: list[dict], lines: list[dict]) -> None:
    by_invoice = defaultdict(Decimal)
    for line in lines:
        by_invoice[line["invoice_id"]] += Decimal(line["amount"])
    assert invoices
    for inv in invoices:
        assert by_invoice[inv["id"]] == Decimal(inv["total"]), inv["id"]
        assert Decimal(inv["subtotal"]) - Decimal(inv["credits"]) == Decimal(inv["total"])
    assert set(by_invoice) == {inv["id"] for inv in invoices}


def check_usage_matches_lines(usage: list[dict], invoices: list[dict], lines: list[dict]) -> None:
    workspace_of = {inv["id"]: inv["workspace_id"] for inv in invoices}
    billed: dict = {}
    for line in lines:
        if line["kind"] in ("running", "extension"):
            key = (line["kind"], workspace_of[line["invoice_id"]], line["deployment_id"], line["template"])
            billed[key] = (Decimal(line["quantity"]), Decimal(line["amount"]))
        else:
            assert line["kind"] == "credit"  # no late usage here, so no adjustments
    used: dict = defaultdict(lambda: [Decimal(0), Decimal(0), 0])
    for row in usage:
        key = (row["kind"], row["workspace_id"], row["deployment_id"], row["template"])
        used[key][0] += Decimal(row["seconds"] if row["kind"] == "running" else row["extensions"])
        used[key][1] += Decimal(row["amount"])
        used[key][2] += 1
    assert set(used) == set(billed)
    for key, (quantity, amount, rows) in used.items():
        assert quantity == billed[key][0], key
        # Each row is rounded once; the line rounds the exact sum once.
        assert abs(amount - billed[key][1]) <= Decimal("0.0000005") * rows, key


def as_text_rows(table) -> list[dict]:
    """Parquet rows with decimals as text, to run the same checks on them."""
    return [{k: (str(v) if isinstance(v, Decimal) else v) for k, v in row.items()} for row in table.to_pylist()]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_exports_reconcile_with_invoices(client, auth, db, seed):
    rng = random.Random(seed)
    await add_credit(db, "ws_1", rng.randrange(1, 3_000_000))
    await ingest(client, auth, random_events(rng))
    for start, end in PERIODS:
        await bill(client, auth, {"period_start": start, "period_end": end})
    checked = 0
    for start, end in PERIODS:
        params = {"start": start, "end": end}
        invoices = read_csv((await export(client, auth, "invoices", **params)).content)
        lines = read_csv((await export(client, auth, "invoice_lines", **params)).content)
        usage = read_csv((await export(client, auth, "usage", **params)).content)
        assert all(inv["status"] == "finalized" for inv in invoices)
        check_lines_sum_to_totals(invoices, lines)
        check_usage_matches_lines(usage, invoices, lines)

        # The same checks on what pyarrow reads from the Parquet files.
        pq_invoices = read_parquet((await export(client, auth, "invoices", format="parquet", **params)).content)
        pq_lines = read_parquet((await export(client, auth, "invoice_lines", format="parquet", **params)).content)
        pq_usage = read_parquet((await export(client, auth, "usage", format="parquet", **params)).content)
        check_lines_sum_to_totals(as_text_rows(pq_invoices), as_text_rows(pq_lines))
        check_usage_matches_lines(as_text_rows(pq_usage), as_text_rows(pq_invoices), as_text_rows(pq_lines))
        assert pq_usage.num_rows == len(usage) and pq_lines.num_rows == len(lines)
        assert sum(pq_usage.column("amount").to_pylist()) == sum(Decimal(r["amount"]) for r in usage)
        checked += len(invoices)
    assert checked >= 3
