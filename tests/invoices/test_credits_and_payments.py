"""How confirmed settlements show on invoices: credit lines, payments, paid status.

The settlements here are stored rows in a given status; how a settlement reaches that
status on chain is tested in tests/settlements.
"""

import secrets

import pytest
from sqlalchemy import update

from metering.db.base import now_us
from metering.invoices.payments import sync_paid
from metering.settlements.models import Settlement
from tests.factories import BATCH, event

JAN = {"period_start": "2026-01-01T00:00:00Z", "period_end": "2026-02-01T00:00:00Z"}
FEB = {"period_start": "2026-02-01T00:00:00Z", "period_end": "2026-03-01T00:00:00Z"}


@pytest.fixture
async def auth(make_token):
    return await make_token("events:write", "invoices:read", "invoices:write")


async def settle(db, kind: str, amount: int, *, workspace_id=None, invoice_id=None, status="confirmed") -> str:
    sid = f"stl_{secrets.token_hex(8)}"
    now = now_us()
    async with db.write() as session:
        session.add(Settlement(
            id=sid, network="eip155:8453", chain_id=8453, transaction="0x" + secrets.token_hex(32), log_index=1,
            block_number=1, block_hash="0x" + "0" * 64, payer="0x" + "1" * 40, pay_to="0x" + "2" * 40,
            amount=amount, nonce="0x" + secrets.token_hex(32), valid_before=2**40, x402_version=2,
            purpose_kind=kind, purpose="{}", workspace_id=workspace_id, invoice_id=invoice_id, status=status,
            created_at=now, confirmed_at=now if status == "confirmed" else None, updated_at=now))
    return sid


async def one_hour(client, auth, day: str, template="giga-max"):  # $0.80
    evs = [event("sandbox.running", f"{day}T10:00:00Z", template=template, sandbox_id=f"sb_{day}"),
           event("sandbox.stopped", f"{day}T11:00:00Z", sandbox_id=f"sb_{day}")]
    assert (await client.post("/v1/events", json=evs, headers={**auth, **BATCH})).status_code == 202


async def invoice_of(client, auth, period):
    await client.post("/v1/billing-runs", json=period, headers=auth)
    items = (await client.get("/v1/invoices", params={"period_start": period["period_start"]}, headers=auth)).json()
    return items["items"][0]


async def test_credit_applies_and_carries_forward(client, auth, db):
    await settle(db, "credit", 1_000_000, workspace_id="ws_1")  # $1.00 prepaid
    await one_hour(client, auth, "2026-01-10")
    jan = await invoice_of(client, auth, JAN)
    assert [(ln["kind"], ln["amount"]) for ln in jan["lines"]][-1] == ("credit", "-0.800000")
    assert (jan["subtotal"], jan["credits"], jan["total"]) == ("0.800000", "0.800000", "0.000000")
    await one_hour(client, auth, "2026-02-10")
    feb = await invoice_of(client, auth, FEB)
    assert (feb["subtotal"], feb["credits"], feb["total"]) == ("0.800000", "0.200000", "0.600000")
    assert sum(int(ln["amount"].replace(".", "")) for ln in feb["lines"]) == 600000


async def test_pending_credit_is_not_applied(client, auth, db):
    await settle(db, "credit", 1_000_000, workspace_id="ws_1", status="pending")
    await one_hour(client, auth, "2026-01-10")
    jan = await invoice_of(client, auth, JAN)
    assert jan["credits"] == "0.000000" and jan["total"] == "0.800000"


async def test_partial_then_full_payment_marks_paid_and_reorg_reverses(client, auth, db):
    await one_hour(client, auth, "2026-01-10")
    inv = await invoice_of(client, auth, JAN)
    first = await settle(db, "invoice", 300_000, invoice_id=inv["id"])
    async with db.write() as session:
        await sync_paid(session)
    got = (await client.get(f"/v1/invoices/{inv['id']}", headers=auth)).json()
    assert (got["status"], got["amount_paid"], got["amount_due"]) == ("finalized", "0.300000", "0.500000")
    await settle(db, "invoice", 500_000, invoice_id=inv["id"])
    async with db.write() as session:
        assert await sync_paid(session) == 1
    got = (await client.get(f"/v1/invoices/{inv['id']}", headers=auth)).json()
    assert (got["status"], got["amount_paid"], got["amount_due"]) == ("paid", "0.800000", "0.000000")
    assert (await client.post(f"/v1/invoices/{inv['id']}/void", headers=auth)).status_code == 409
    # A payment whose block left the chain no longer counts.
    async with db.write() as session:
        await session.execute(update(Settlement).where(Settlement.id == first).values(status="reorged"))
        await sync_paid(session)
    got = (await client.get(f"/v1/invoices/{inv['id']}", headers=auth)).json()
    assert (got["status"], got["amount_paid"], got["amount_due"]) == ("finalized", "0.500000", "0.300000")
