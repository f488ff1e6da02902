"""Delivering outbox events: claim due deliveries, POST them signed, record the outcome.

At least once: a delivery is marked delivered only after a 2xx, so a crash between the
POST and the record sends it again; receivers drop repeats by the event id. Failures
back off exponentially (``backoff_seconds * 2**(attempts-1)``, capped) and give up as
``failed`` after ``max_attempts``.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import msgspec
from sqlalchemy import delete, select, update

from metering.core.timeutil import format_time
from metering.db import Database
from metering.db.base import now_us as current_time_us
from metering.logging import get_logger
from metering.settings import Settings
from metering.webhooks.models import Delivery, DeliveryStatus, OutboxEvent
from metering.webhooks.signing import sign

OUTBOX = OutboxEvent.__table__
DELIVERIES = Delivery.__table__
USER_AGENT = "metering-webhooks/1"
log = get_logger(__name__)


@dataclass
class DeliveryStats:
    attempted: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0


@dataclass(frozen=True)
class _Due:
    id: int
    url: str
    secret_env: str
    attempts: int
    event_id: str
    type: str
    payload: str
    created_at: int


def body_of(event_id: str, type_: str, created_at: int, payload: str) -> bytes:
    """The exact bytes sent, the same on every attempt (the stored data is embedded as is)."""
    return msgspec.json.encode({"id": event_id, "type": type_, "created_at": format_time(created_at),
                                "data": msgspec.Raw(payload.encode())})


def backoff_us(settings: Settings, attempts: int) -> int:
    conf = settings.webhook_delivery
    seconds = min(conf.backoff_seconds * 2 ** max(attempts - 1, 0), conf.backoff_cap_seconds)
    return seconds * 1_000_000


def safe_url(url: str) -> str:
    """The URL for logs: no credentials, no query (either may carry a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"


async def _claim(db: Database, settings: Settings, now: int) -> list[_Due]:
    """Take the due deliveries out of the queue for a while, so no one else sends them meanwhile."""
    conf = settings.webhook_delivery
    hold_us = (conf.timeout_seconds + settings.scheduler.lease_seconds) * 1_000_000
    query = (
        select(DELIVERIES.c.id, DELIVERIES.c.url, DELIVERIES.c.secret_env, DELIVERIES.c.attempts,
               OUTBOX.c.event_id, OUTBOX.c.type, OUTBOX.c.payload, OUTBOX.c.created_at)
        .select_from(DELIVERIES.join(OUTBOX, DELIVERIES.c.outbox_id == OUTBOX.c.id))
        .where(DELIVERIES.c.status == DeliveryStatus.PENDING, DELIVERIES.c.next_attempt_at <= now)
        .order_by(DELIVERIES.c.next_attempt_at, DELIVERIES.c.id)
        .limit(conf.batch_size)
        # PostgreSQL: two deliverers never claim the same rows. SQLite has one writer anyway.
        .with_for_update(skip_locked=True, of=DELIVERIES)
    )
    async with db.write() as session:
        due = [_Due(*row) for row in await session.execute(query)]
        if due:
            await session.execute(update(DELIVERIES).where(DELIVERIES.c.id.in_([d.id for d in due])).values(
                next_attempt_at=now + hold_us, updated_at=now))
    return due


async def _send(client: httpx.AsyncClient, due: _Due) -> str | None:
    """POST one delivery; None on a 2xx, else what went wrong (never the secret)."""
    secret = os.environ.get(due.secret_env)
    if not secret:
        # Unsigned webhooks would be worthless to a receiver that checks: wait for the operator.
        return f"the secret variable {due.secret_env} is not set"
    body = body_of(due.event_id, due.type, due.created_at, due.payload)
    timestamp = time.time_ns() // 1_000_000_000
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Webhook-Id": due.event_id,
        "Webhook-Timestamp": str(timestamp),
        "Webhook-Signature": sign(secret, timestamp, body),
    }
    try:
        response = await client.post(due.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


async def _record(db: Database, settings: Settings, due: _Due, error: str | None, now: int) -> str:
    attempts = due.attempts + 1
    if error is None:
        values = {"status": DeliveryStatus.DELIVERED, "delivered_at": now, "next_attempt_at": None,
                  "last_error": None}
    elif attempts >= settings.webhook_delivery.max_attempts:
        values = {"status": DeliveryStatus.FAILED, "next_attempt_at": None, "last_error": error[:512]}
    else:
        values = {"next_attempt_at": now + backoff_us(settings, attempts), "last_error": error[:512]}
    async with db.write() as session:
        # Guarded by the attempt count we claimed: a stale deliverer cannot overwrite a newer outcome.
        await session.execute(update(DELIVERIES).where(
            DELIVERIES.c.id == due.id, DELIVERIES.c.status == DeliveryStatus.PENDING,
            DELIVERIES.c.attempts == due.attempts,
        ).values(attempts=attempts, updated_at=now, **values))
    outcome = values.get("status", "retrying")
    log.info("webhook_delivery", event_id=due.event_id, type=due.type, url=safe_url(due.url),
             attempt=attempts, outcome=outcome, error=error)
    return outcome


async def deliver_due(
    db: Database, settings: Settings, *, now_us: int | None = None, client: httpx.AsyncClient | None = None,
) -> DeliveryStats:
    """Send every delivery that is due (up to ``batch_size``), a few at a time."""
    now = current_time_us() if now_us is None else now_us
    stats = DeliveryStats()
    due = await _claim(db, settings, now)
    if not due:
        return stats
    conf = settings.webhook_delivery
    own = client is None
    client = client or httpx.AsyncClient(timeout=httpx.Timeout(conf.timeout_seconds), follow_redirects=False)
    gate = asyncio.Semaphore(conf.concurrency)

    async def one(item: _Due) -> str:
        async with gate:
            error = await _send(client, item)
        return await _record(db, settings, item, error, now)

    try:
        outcomes = await asyncio.gather(*(one(item) for item in due))
    finally:
        if own:
            await client.aclose()
    stats.attempted = len(outcomes)
    stats.delivered = outcomes.count(DeliveryStatus.DELIVERED)
    stats.failed = outcomes.count(DeliveryStatus.FAILED)
    stats.retrying = outcomes.count("retrying")
    return stats


PRUNE_BATCH = 500  # events per tick: a long backlog goes over several ticks


async def prune(db: Database, settings: Settings, *, now_us: int | None = None) -> int:
    """Delete outbox events older than the retention whose deliveries all ended; returns how many.

    An event with a delivery still pending stays, however old: at least once means until it
    is delivered or given up.
    """
    now = current_time_us() if now_us is None else now_us
    cutoff = now - settings.webhook_delivery.retention_days * 86_400_000_000
    pending = select(DELIVERIES.c.outbox_id).where(DELIVERIES.c.status == DeliveryStatus.PENDING)
    async with db.write() as session:
        ids = list((await session.execute(
            select(OUTBOX.c.id).where(OUTBOX.c.created_at < cutoff, OUTBOX.c.id.not_in(pending))
            .order_by(OUTBOX.c.created_at).limit(PRUNE_BATCH)
        )).scalars())
        if ids:
            await session.execute(delete(DELIVERIES).where(DELIVERIES.c.outbox_id.in_(ids)))
            await session.execute(delete(OUTBOX).where(OUTBOX.c.id.in_(ids)))
    return len(ids)

