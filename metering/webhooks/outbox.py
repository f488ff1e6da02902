"""Writing webhook events into the outbox, inside the caller's transaction.

The event and its deliveries commit or roll back with the change that caused them, so
a webhook is never sent for a change that did not happen, nor lost for one that did.
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from metering.db.base import now_us
from metering.settings import Settings
from metering.webhooks.models import Delivery, DeliveryStatus, OutboxEvent

OUTBOX = OutboxEvent.__table__
DELIVERIES = Delivery.__table__


def _refuse_floats(value: Any, path: str = "data") -> None:
    # Money goes out as 6-decimal strings; a float in a payload is a bug upstream.
    if isinstance(value, float):
        raise TypeError(f"{path} is a float; send money and quantities as strings or ints")
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_floats(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _refuse_floats(item, f"{path}[{i}]")


async def enqueue(session: AsyncSession, type_: str, data: dict, *, settings: Settings) -> str:
    """Queue ``type_`` with ``data`` for every configured webhook; returns the event id.

    Call it in the transaction that makes the change; nothing is sent until it commits.
    """
    return (await enqueue_many(session, type_, [data], settings=settings))[0]


async def enqueue_many(session: AsyncSession, type_: str, datas: list[dict], *, settings: Settings) -> list[str]:
    """:func:`enqueue` for several events of one type at once (a billing run's invoices)."""
    if not type_ or len(type_) > 64:
        raise ValueError("a webhook event type is 1 to 64 characters")
    for data in datas:
        if not isinstance(data, dict):
            raise TypeError("webhook data must be a dict")
        _refuse_floats(data)
    if not datas:
        return []
    now = now_us()
    events = [{"event_id": f"evt_{secrets.token_hex(16)}", "type": type_, "created_at": now,
               "payload": msgspec.json.encode(data).decode()} for data in datas]
    # Multi-row VALUES with RETURNING; the event id says which row each outbox id belongs to.
    outbox_ids = dict((await session.execute(
        insert(OUTBOX).returning(OUTBOX.c.event_id, OUTBOX.c.id), events)).all())
    # One delivery per distinct endpoint: the same URL twice in the settings gets it once.
    endpoints = {hook.url: hook.secret_env for hook in settings.webhooks}
    if endpoints:
        await session.execute(insert(DELIVERIES), [
            {"outbox_id": outbox_ids[event["event_id"]], "url": url, "secret_env": secret_env,
             "status": DeliveryStatus.PENDING, "attempts": 0, "next_attempt_at": now, "created_at": now,
             "updated_at": now}
            for event in events for url, secret_env in endpoints.items()
        ])
    return [event["event_id"] for event in events]
