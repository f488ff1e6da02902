"""Budgets: PUT/GET/DELETE, and one ``budget.threshold_crossed`` webhook per crossing."""

import asyncio
import json

from sqlalchemy import select

from metering.core.timeutil import parse_time
from metering.db.base import now_us
from metering.pricing.service import PriceCatalog
from metering.scheduler.runner import Scheduler
from metering.spend.budgets import check_budgets
from metering.webhooks.delivery import deliver_due
from metering.webhooks.models import OutboxEvent
from tests.factories import BATCH, event, pricing_toml
from tests.webhooks.test_webhooks_delivery import assert_signed

BUDGET = {"amount": "1.000000", "thresholds": [100, 50, 80]}


def iso_us(us: int) -> str:
    from metering.core.timeutil import format_time

    return format_time(us)


async def post(client, admin, *events):
    resp = await client.post("/v1/events", json=list(events), headers={**admin, **BATCH})
    assert resp.status_code == 202, resp.text


async def crossings(db) -> list[dict]:
    async with db.read() as session:
        rows = (await session.execute(select(OutboxEvent).where(OutboxEvent.type == "budget.threshold_crossed")
                                      .order_by(OutboxEvent.id))).scalars().all()
    return [json.loads(r.payload) for r in rows]


async def test_budget_put_get_delete(client, admin, make_token):
    resp = await client.put("/v1/workspaces/ws_1/budget", json=BUDGET, headers=admin)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["amount"], body["thresholds"], body["crossed"], body["spent"]) == (
        "1.000000", [50, 80, 100], [], "0.000000")
    reader = await make_token("usage:read", workspace_id="ws_1")
    assert (await client.get("/v1/workspaces/ws_1/budget", headers=reader)).json()["amount"] == "1.000000"
    # Writing takes invoices:write; another tenant's budget is 404 for a bound token.
    assert (await client.put("/v1/workspaces/ws_1/budget", json=BUDGET, headers=reader)).status_code == 403
    assert (await client.get("/v1/workspaces/ws_2/budget", headers=reader)).status_code == 404
    for bad, field in (({"amount": "0", "thresholds": [50]}, "amount"),
                       ({"amount": "1.0000001", "thresholds": [50]}, "amount"),
                       ({"amount": "1", "thresholds": [0]}, "thresholds"),
                       ({"amount": "1", "thresholds": [1001]}, "thresholds"),
                       ({"amount": "1", "thresholds": [50, 50]}, "thresholds"),
                       ({"amount": "1", "thresholds": []}, "thresholds")):
        resp = await client.put("/v1/workspaces/ws_1/budget", json=bad, headers=admin)
        assert resp.status_code == 422, (bad, resp.text)
        assert resp.json()["errors"][0]["field"] == field
    assert (await client.put("/v1/workspaces/ws_1/budget", json={"amount": "1"}, headers=admin)).status_code in (400, 422)
    assert (await client.delete("/v1/workspaces/ws_1/budget", headers=admin)).status_code == 204
    assert (await client.get("/v1/workspaces/ws_1/budget", headers=admin)).status_code == 404
    assert (await client.delete("/v1/workspaces/ws_1/budget", headers=admin)).status_code == 404


async def test_crossing_by_ingest_is_sent_once_across_restarts_and_instances(client, admin, db, settings, receiver):
    await client.put("/v1/workspaces/ws_1/budget", json=BUDGET, headers=admin)
    # giga-standard at 0.20/h from 00:00: 0.60 by 03:00.
    await post(client, admin, event("sandbox.running", "2026-03-10T00:00:00Z", template="giga-standard"),
               event("sandbox.stopped", "2026-03-10T03:00:00Z"))
    now = parse_time("2026-03-10T03:00:10Z")
    first = Scheduler(db, settings)
    assert (await first.run_job("spend", now_us=now)).outcome == "ok"
    assert await crossings(db) == [{"workspace_id": "ws_1", "period_start": "2026-03-01T00:00:00Z", "threshold": 50,
                                    "amount": "1.000000", "spent": "0.600000"}]
    # A restart (another scheduler, another holder) and two instances at once send nothing more.
    assert (await Scheduler(db, settings).run_job("spend", now_us=now)).outcome == "skipped"
    book = await PriceCatalog.from_file(settings.pricing_file).refresh(db)
    assert await asyncio.gather(check_budgets(db, settings, book, now), check_budgets(db, settings, book, now)) == [0, 0]
    # More usage crosses 80 and 100 together: one webhook each, once, even with two instances racing.
    await post(client, admin, event("sandbox.running", "2026-03-10T04:00:00Z", template="giga-standard"),
               event("sandbox.stopped", "2026-03-10T06:00:00Z"))
    later = parse_time("2026-03-10T06:00:05Z")
    sent = await asyncio.gather(check_budgets(db, settings, book, later), check_budgets(db, settings, book, later))
    assert sorted(sent) == [0, 2]
    assert [c["threshold"] for c in await crossings(db)] == [50, 80, 100]
    budget = (await client.get("/v1/workspaces/ws_1/budget", params={"as_of": "2026-03-10T06:00:05Z"},
                               headers=admin)).json()
    assert budget["crossed"] == [50, 80, 100] and budget["spent"] == "1.000000"
    # Delivered signed through the outbox.
    stats = await deliver_due(db, settings)
    assert stats.delivered == 3
    bodies = [assert_signed(r) for r in receiver.received]
    assert {b["type"] for b in bodies} == {"budget.threshold_crossed"}
    assert sorted(b["data"]["threshold"] for b in bodies) == [50, 80, 100]


async def test_crossing_by_a_late_event_in_the_current_and_the_previous_period(client, admin, db, settings):
    await client.put("/v1/workspaces/ws_1/budget", json={"amount": "0.100000", "thresholds": [100]}, headers=admin)
    await post(client, admin, event("sandbox.running", "2026-03-31T10:00:00Z", sandbox_id="sb_1"),
               event("sandbox.stopped", "2026-03-31T10:30:00Z", sandbox_id="sb_1"))
    book = await PriceCatalog.from_file(settings.pricing_file).refresh(db)
    april = parse_time("2026-04-01T00:05:00Z")
    assert await check_budgets(db, settings, book, april) == 0  # 0.05 of 0.10
    # A stop lost for a while: the sandbox ran 10:00-11:00 on March 31, known only in April.
    await post(client, admin, event("sandbox.running", "2026-03-31T12:00:00Z", sandbox_id="sb_2"),
               event("sandbox.stopped", "2026-03-31T13:00:00Z", sandbox_id="sb_2"))
    assert await check_budgets(db, settings, book, april + 10_000_000) == 1
    assert await crossings(db) == [{"workspace_id": "ws_1", "period_start": "2026-03-01T00:00:00Z",
                                    "threshold": 100, "amount": "0.100000", "spent": "0.150000"}]
    # In the current period, an extension arriving late with an earlier time crosses it too.
    await post(client, admin, event("sandbox.extended", "2026-04-01T00:01:00Z", sandbox_id="sb_3", minutes=60))
    assert await check_budgets(db, settings, book, april + 20_000_000) == 1
    assert (await crossings(db))[-1]["period_start"] == "2026-04-01T00:00:00Z"


async def test_crossing_by_a_price_change_taking_effect(client, admin, db, tmp_path, spend_settings):
    pricing = tmp_path / "pricing-change.toml"
    pricing.write_text(pricing_toml("2026-03-10T12:00:00Z", {"giga-mini": ("10.00", "0.025")}))
    settings = spend_settings(pricing_file=str(pricing))
    await client.put("/v1/workspaces/ws_1/budget", json={"amount": "10.000000", "thresholds": [50]}, headers=admin)
    await post(client, admin, event("sandbox.running", "2026-03-10T00:00:00Z"))  # giga-mini, still running
    scheduler = Scheduler(db, settings)
    # 12 h at 0.10 = 1.20; at the old price it would take 50 h to reach 5.00.
    await scheduler.run_job("spend", now_us=parse_time("2026-03-10T12:00:00Z"))
    assert await crossings(db) == []
    # Half an hour at the new 10.00/h: 1.20 + 5.00.
    await scheduler.run_job("spend", now_us=parse_time("2026-03-10T12:30:00Z"))
    (crossed,) = await crossings(db)
    assert (crossed["threshold"], crossed["spent"]) == (50, "6.200000")


async def test_threshold_webhook_within_a_minute_from_the_running_service(db, spend_settings, receiver):
    """The service with its scheduler on: the event that crosses the budget is followed by the
    webhook within seconds (a check every second here; 10 s by default)."""
    from litestar.testing import AsyncTestClient

    from metering.api.app import create_app
    from tests.conftest import ADMIN_TOKEN

    settings = spend_settings(scheduler={"enabled": True, "webhook_interval_seconds": 1},
                              spend={"check_interval_seconds": 1})
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with AsyncTestClient(app=create_app(settings)) as client:
        await client.put("/v1/workspaces/ws_live/budget", json={"amount": "0.100000", "thresholds": [100]},
                         headers=admin)
        two_hours_ago = now_us() - 2 * 3_600_000_000
        sent_at = now_us()
        await post(client, admin, event("sandbox.running", iso_us(two_hours_ago), workspace_id="ws_live"))
        while not budget_hooks(receiver) and now_us() - sent_at < 60_000_000:
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # more ticks: still one
    (body,) = budget_hooks(receiver)
    assert body["data"]["workspace_id"] == "ws_live" and body["data"]["threshold"] == 100
    assert len(await crossings(db)) == 1


def budget_hooks(receiver) -> list[dict]:
    bodies = [assert_signed(r) for r in list(receiver.received)]
    return [b for b in bodies if b["type"] == "budget.threshold_crossed"]
