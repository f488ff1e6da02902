"""Webhooks from the outbox to a real local HTTP receiver: signed, retried, at least once."""

import hashlib
import hmac
import json

from sqlalchemy import func, select, update

from metering.db.base import now_us
from metering.scheduler.runner import Scheduler
from metering.webhooks.delivery import deliver_due, prune
from metering.webhooks.models import Delivery, OutboxEvent
from metering.webhooks.outbox import enqueue
from tests.reports.data import post_day
from tests.webhooks.conftest import SECRET

SECOND = 1_000_000


def assert_signed(received) -> dict:
    """Check the signature the way a receiver would, independently of the service's code."""
    timestamp = received.headers["webhook-timestamp"]
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + received.body, hashlib.sha256).hexdigest()
    assert received.headers["webhook-signature"] == f"v1={expected}"
    assert received.headers["content-type"] == "application/json"
    body = json.loads(received.body)
    assert received.headers["webhook-id"] == body["id"]
    return body


async def deliveries(db):
    async with db.read() as session:
        return (await session.execute(select(Delivery).order_by(Delivery.id))).scalars().all()


async def test_enqueued_event_is_posted_signed(db, settings, receiver):
    async with db.write() as session:
        event_id = await enqueue(session, "invoice.finalized",
                                 {"invoice_id": "inv_1", "number": "INV-000001", "total": "1.500000"},
                                 settings=settings)
    assert event_id.startswith("evt_")
    stats = await deliver_due(db, settings)
    assert (stats.attempted, stats.delivered) == (1, 1)
    (got,) = receiver.received
    assert got.path == "/hooks/metering"
    body = assert_signed(got)
    assert body["id"] == event_id and body["type"] == "invoice.finalized"
    assert body["data"] == {"invoice_id": "inv_1", "number": "INV-000001", "total": "1.500000"}
    assert body["created_at"].endswith("Z")
    assert abs(int(got.headers["webhook-timestamp"]) - now_us() // SECOND) < 60
    (row,) = await deliveries(db)
    assert (row.status, row.attempts, row.delivered_at is not None) == ("delivered", 1, True)
    # Delivered once: nothing more goes out.
    assert (await deliver_due(db, settings)).attempted == 0
    assert len(receiver.received) == 1


async def test_failed_delivery_is_retried_with_the_same_event_id(db, settings, receiver):
    receiver.statuses = [500]
    async with db.write() as session:
        event_id = await enqueue(session, "invoice.finalized", {"invoice_id": "inv_2"}, settings=settings)
    t0 = now_us()
    first = await deliver_due(db, settings, now_us=t0)
    assert (first.attempted, first.retrying) == (1, 1)
    (row,) = await deliveries(db)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "HTTP 500")
    assert row.next_attempt_at == t0 + 30 * SECOND  # backoff_seconds after the first failure
    # Not due yet.
    assert (await deliver_due(db, settings, now_us=t0 + 29 * SECOND)).attempted == 0
    second = await deliver_due(db, settings, now_us=t0 + 30 * SECOND)
    assert second.delivered == 1
    assert len(receiver.received) == 2
    bodies = [assert_signed(r) for r in receiver.received]
    assert bodies[0] == bodies[1] and bodies[0]["id"] == event_id
    assert receiver.received[0].body == receiver.received[1].body  # byte for byte: the id lets receivers dedupe
    (row,) = await deliveries(db)
    assert (row.status, row.attempts, row.last_error) == ("delivered", 2, None)


async def test_gives_up_after_max_attempts_with_capped_backoff(db, settings, receiver):
    receiver.statuses = [500, 503, 502, 500]
    async with db.write() as session:
        await enqueue(session, "report.created", {"report_id": "rep_x"}, settings=settings)
    t = now_us()
    waits = []
    for _ in range(3):
        assert (await deliver_due(db, settings, now_us=t)).attempted == 1
        (row,) = await deliveries(db)
        if row.next_attempt_at is not None:
            waits.append((row.next_attempt_at - t) // SECOND)
            t = row.next_attempt_at
    assert waits == [30, 50]  # 30, then 60 capped at 50
    (row,) = await deliveries(db)
    assert (row.status, row.attempts, row.last_error) == ("failed", 3, "HTTP 502")
    assert (await deliver_due(db, settings, now_us=t + 10**12)).attempted == 0
    assert len(receiver.received) == 3


async def test_unreachable_endpoint_is_retried(db, settings, receiver):
    receiver.__exit__()  # nothing listens on the port any more
    async with db.write() as session:
        await enqueue(session, "report.created", {"report_id": "rep_y"}, settings=settings)
    stats = await deliver_due(db, settings)
    assert stats.retrying == 1
    (row,) = await deliveries(db)
    assert row.status == "pending" and row.last_error.startswith("ConnectError")


async def test_missing_secret_sends_nothing_unsigned(db, settings, receiver, monkeypatch):
    monkeypatch.delenv("TEST_WEBHOOK_SECRET")
    async with db.write() as session:
        await enqueue(session, "report.created", {"report_id": "rep_z"}, settings=settings)
    await deliver_due(db, settings)
    assert receiver.received == []
    (row,) = await deliveries(db)
    assert row.status == "pending" and "TEST_WEBHOOK_SECRET" in row.last_error and SECRET not in row.last_error


async def test_enqueue_rolls_back_with_its_transaction(db, settings, receiver):
    class Boom(Exception):
        pass

    try:
        async with db.write() as session:
            await enqueue(session, "invoice.finalized", {"invoice_id": "inv_3"}, settings=settings)
            raise Boom
    except Boom:
        pass
    async with db.read() as session:
        assert (await session.execute(select(func.count()).select_from(OutboxEvent))).scalar_one() == 0
    assert (await deliver_due(db, settings)).attempted == 0


async def test_floats_are_refused(db, settings):
    import pytest

    async with db.write() as session:
        with pytest.raises(TypeError):
            await enqueue(session, "invoice.finalized", {"total": 1.5}, settings=settings)


async def test_report_creation_enqueues_report_created_and_delivers_it(client, make_token, db, settings, receiver):
    await post_day(client, make_token)
    scheduler = Scheduler(db, settings)
    assert (await scheduler.run_job("reports")).outcome == "ok"
    webhooks = await scheduler.run_job("webhooks")
    assert webhooks.outcome == "ok" and "delivered=3" in webhooks.detail
    bodies = [assert_signed(r) for r in receiver.received]
    assert {b["type"] for b in bodies} == {"report.created"}
    assert len({b["id"] for b in bodies}) == 3
    by_key = {(b["data"]["workspace_id"], b["data"]["day"]): b["data"] for b in bodies}
    assert set(by_key) == {("ws_1", "2026-01-05"), ("ws_1", "2026-01-06"), ("ws_2", "2026-01-05")}
    jan5 = by_key[("ws_1", "2026-01-05")]
    assert jan5["total"] == "0.500028" and jan5["runs"] == {"queued": 3, "running": 2, "completed": 1, "failed": 1}
    assert jan5["report_id"].startswith("rep_") and jan5["kind"] == "daily_usage"
    # The report it names is served.
    admin = {"Authorization": f"Bearer {settings.admin_token}"}
    assert (await client.get(f"/v1/reports/{jan5['report_id']}", headers=admin)).status_code == 200
    # Running both again sends nothing new.
    await scheduler.run_job("reports")
    assert (await scheduler.run_job("webhooks")).outcome == "skipped"
    assert len(receiver.received) == 3


async def test_prune_drops_ended_events_past_retention_and_keeps_pending_ones(db, settings):
    async with db.write() as session:
        ids = [await enqueue(session, "report.created", {"report_id": f"rep_{i}"}, settings=settings)
               for i in range(3)]
    async with db.write() as session:  # one delivered, one given up, one still pending
        for event_id, status in zip(ids, ("delivered", "failed")):
            outbox_id = select(OutboxEvent.id).where(OutboxEvent.event_id == event_id).scalar_subquery()
            await session.execute(update(Delivery).where(Delivery.outbox_id == outbox_id).values(status=status))
    day = 86_400 * SECOND
    retention = settings.webhook_delivery.retention_days * day

    assert await prune(db, settings, now_us=now_us() + retention - day) == 0  # not old enough yet
    assert await prune(db, settings, now_us=now_us() + retention + day) == 2
    async with db.read() as session:
        left = (await session.execute(select(OutboxEvent.event_id))).scalars().all()
        statuses = (await session.execute(select(Delivery.status))).scalars().all()
    assert left == [ids[2]] and set(statuses) == {"pending"}
