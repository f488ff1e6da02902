"""Requests the service refuses before any chain check, tenancy, listing."""

from __future__ import annotations

import base64
import json

import pytest

from metering.errors import NotFound
from tests.chain.fixtures import sign_payment
from tests.settlements.conftest import random_tx, run_purpose

pytestmark = pytest.mark.slow


@pytest.fixture
async def writer(make_token):
    return await make_token("settlements:write", "settlements:read")


@pytest.fixture
def payment(payer, pay_to):
    return sign_payment(payer, pay_to, 500_000)


def wrong_amount(payer, pay_to):
    """A payment that is rejected offline (no chain needed): $1.00 paid for a $0.50 run."""
    return sign_payment(payer, pay_to, 1_000_000)[0]


async def post(client, auth, **body):
    return await client.post("/v1/settlements", json=body, headers=auth)


def fields(resp) -> list[str]:
    return [e.get("field") for e in resp.json()["errors"]]


async def test_malformed_reports_are_422_naming_the_field(client, writer, payment):
    payload, header = payment
    tx = random_tx()
    cases = [
        ({"transaction": tx, "purpose": run_purpose()}, "payment_payload"),
        ({"transaction": tx, "purpose": run_purpose(), "payment_payload": payload, "payment_header": header},
         "payment_payload"),
        ({"transaction": tx, "purpose": run_purpose(), "payment_header": "not base64 json!"}, "payment_header"),
        ({"transaction": tx, "purpose": run_purpose(),
          "payment_header": base64.b64encode(b'{"x402Version": 2, "payload": {}}').decode()},
         "payment_header.accepted"),
        ({"transaction": "0x1234", "purpose": run_purpose(), "payment_payload": payload}, "transaction"),
        ({"transaction": tx, "purpose": run_purpose(), "payment_payload": payload, "network": "eip155:84532"},
         "network"),
        ({"transaction": tx, "purpose": {"kind": "gift"}, "payment_payload": payload}, "purpose.kind"),
        ({"transaction": tx, "purpose": {"kind": "credit"}, "payment_payload": payload}, "purpose.workspace_id"),
        ({"transaction": tx, "purpose": {"kind": "invoice"}, "payment_payload": payload}, "purpose.invoice_id"),
        ({"transaction": tx, "purpose": {"kind": "run", "tier": "$0.50"}, "payment_payload": payload},
         "purpose.run_id"),
    ]
    for body, field in cases:
        resp = await post(client, writer, **body)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert field in fields(resp), (field, resp.json())

    def with_auth(**change):
        doc = json.loads(json.dumps(payload))
        doc["payload"]["authorization"].update(change)
        return doc

    for change, field in (
        ({"value": 500000}, "value"),  # a JSON number, not the decimal string x402 sends
        ({"value": "-5"}, "value"),
        ({"nonce": "0x12"}, "nonce"),
        ({"from": "alice"}, "from"),
    ):
        resp = await post(client, writer, transaction=tx, purpose=run_purpose(), payment_payload=with_auth(**change))
        assert resp.status_code == 422, resp.text
        assert fields(resp) == [f"payment_payload.payload.authorization.{field}"]


async def test_scopes(client, make_token, payment):
    reader = await make_token("settlements:read")
    resp = await post(client, reader, transaction=random_tx(), purpose=run_purpose(), payment_payload=payment[0])
    assert resp.status_code == 403
    writer_only = await make_token("settlements:write")
    assert (await client.get("/v1/settlements", headers=writer_only)).status_code == 403
    assert (await client.get("/v1/settlements")).status_code == 401


async def test_workspace_bound_tokens_see_only_their_workspace(client, make_token, admin, payer, pay_to):
    payload = wrong_amount(payer, pay_to)
    resp = await post(client, admin, transaction=random_tx(), payment_payload=payload,
                      purpose=run_purpose(workspace_id="ws_1"))
    assert resp.status_code == 201
    sid = resp.json()["id"]
    mine = await make_token("settlements:read", "settlements:write", workspace_id="ws_1")
    theirs = await make_token("settlements:read", "settlements:write", workspace_id="ws_2")

    assert (await client.get(f"/v1/settlements/{sid}", headers=mine)).status_code == 200
    assert (await client.get(f"/v1/settlements/{sid}", headers=theirs)).status_code == 404
    assert [s["id"] for s in (await client.get("/v1/settlements", headers=mine)).json()["items"]] == [sid]
    assert (await client.get("/v1/settlements", headers=theirs)).json() == {"items": [], "next_cursor": None}
    assert (await client.get("/v1/settlements?workspace_id=ws_1", headers=theirs)).status_code == 404

    # Reporting for another workspace is 404; without one, the token's own is used.
    other = wrong_amount(payer, pay_to)
    resp = await post(client, theirs, transaction=random_tx(), payment_payload=other,
                      purpose={"kind": "credit", "workspace_id": "ws_1"})
    assert resp.status_code == 404
    resp = await post(client, theirs, transaction=random_tx(), payment_payload=other, purpose=run_purpose())
    assert resp.status_code == 201
    assert [s["id"] for s in (await client.get("/v1/settlements", headers=theirs)).json()["items"]] == [
        resp.json()["id"]
    ]


async def test_list_filters_and_pages(client, writer, payer, pay_to):
    ids = []
    for _ in range(5):
        resp = await post(client, writer, transaction=random_tx(), payment_payload=wrong_amount(payer, pay_to),
                          purpose=run_purpose(workspace_id="ws_page"))
        ids.append(resp.json()["id"])
    seen, cursor = [], None
    while True:
        query = "/v1/settlements?workspace_id=ws_page&status=rejected&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(query, headers=writer)).json()
        assert len(page["items"]) <= 2
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert (await client.get("/v1/settlements?status=pending", headers=writer)).json()["items"] == []
    by_payer = (await client.get(f"/v1/settlements?payer={payer.address}", headers=writer)).json()
    assert len(by_payer["items"]) == 5
    assert (await client.get("/v1/settlements?cursor=zz", headers=writer)).status_code == 422
    assert (await client.get("/v1/settlements?status=paid", headers=writer)).status_code == 422
    assert (await client.get("/v1/settlements?limit=501", headers=writer)).status_code in (400, 422)
    assert (await client.get("/v1/settlements/stl_nope", headers=writer)).status_code == 404


async def test_invoice_check_decides_the_workspace(client, writer, payer, pay_to):
    async def invoice_check(session, invoice_id):
        if invoice_id != "inv_1":
            raise NotFound(f"no invoice {invoice_id!r}")
        return "ws_inv"

    client.app.state["invoice_check"] = invoice_check
    payload = wrong_amount(payer, pay_to)
    resp = await post(client, writer, transaction=random_tx(), payment_payload=payload,
                      purpose={"kind": "invoice", "invoice_id": "inv_404"})
    assert resp.status_code == 404
    resp = await post(client, writer, transaction=random_tx(), payment_payload=payload,
                      purpose={"kind": "invoice", "invoice_id": "inv_1"})
    assert resp.status_code in (201, 202), resp.text
    listed = (await client.get("/v1/settlements?workspace_id=ws_inv", headers=writer)).json()["items"]
    assert [s["id"] for s in listed] == [resp.json()["id"]]


async def test_repeat_of_an_invoice_payment_is_200_even_once_the_invoice_is_paid(client, writer, payer, pay_to):
    from metering.errors import Conflict

    paid = False

    async def invoice_check(session, invoice_id):
        if paid:
            raise Conflict(f"invoice {invoice_id!r} is already paid")
        return "ws_inv"

    client.app.state["invoice_check"] = invoice_check
    payload = wrong_amount(payer, pay_to)
    purpose = {"kind": "invoice", "invoice_id": "inv_1"}
    body = {"transaction": random_tx(), "payment_payload": payload, "purpose": purpose}
    first = await post(client, writer, **body)
    assert first.status_code == 202, first.text
    paid = True
    again = await post(client, writer, **body)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    another = await post(client, writer, **{**body, "payment_payload": wrong_amount(payer, pay_to)})
    assert another.status_code == 409


async def test_a_payment_reported_by_one_workspace_is_a_conflict_for_another(client, make_token, payer, pay_to):
    payload = sign_payment(payer, pay_to, 500_000)[0]
    ws1 = await make_token("settlements:read", "settlements:write", workspace_id="ws_1")
    ws2 = await make_token("settlements:read", "settlements:write", workspace_id="ws_2")
    body = {"transaction": random_tx(), "payment_payload": payload, "purpose": run_purpose()}
    first = await post(client, ws1, **body)
    assert first.status_code == 202 and first.json()["status"] == "pending"
    other = await post(client, ws2, **body)
    assert other.status_code == 409
    assert first.json()["id"] not in other.text
