"""Validate a batch of CloudEvents and store it, all or nothing, exactly once per key."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import msgspec
from sqlalchemy import select, tuple_

from metering.core.timeutil import format_time
from metering.db import Database, insert_ignore
from metering.errors import Conflict, Invalid, field_error
from metering.events.models import Event
from metering.events.schemas import CloudEvent, IngestResult, check_rules, split_msgspec_error

EVENTS = Event.__table__
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_US = datetime.resolution
MAX_REPORTED_ERRORS = 100
KEY_CHUNK = 500

_canonical = msgspec.json.Encoder(order="sorted")

TemplateCheck = Callable[[str, int], bool]
AfterInsert = Callable[[Any, list[dict[str, Any]]], Any]


def _to_us(dt: datetime) -> int:
    return (dt - EPOCH) // ONE_US


def validate_batch(
    raw_events: Sequence[Any], *, template_known: TemplateCheck, latest_us: int, received_us: int
) -> list[dict[str, Any]]:
    """Rows ready to insert, or ``Invalid`` naming every bad event's index and field."""
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for index, raw in enumerate(raw_events):
        if not isinstance(raw, dict):
            errors.append(field_error("an event must be a JSON object", None, index))
            continue
        try:
            ev = msgspec.convert(raw, CloudEvent)
        except msgspec.ValidationError as exc:
            message, field = split_msgspec_error(str(exc))
            errors.append(field_error(message, field, index))
            continue
        problems = check_rules(ev)
        time_us = _to_us(ev.time)
        if time_us > latest_us:
            problems.append(("time", f"is too far in the future (latest accepted {format_time(latest_us)})"))
        data = ev.data
        if data.template is not None and not problems and not template_known(data.template, time_us):
            problems.append(("data.template", f"unknown template {data.template!r}"))
        if problems:
            errors.extend(field_error(msg, field, index) for field, msg in problems)
            continue
        payload = _canonical.encode(raw)
        rows.append(
            {
                "source": ev.source,
                "event_id": ev.id,
                "type": ev.type,
                "time": time_us,
                "workspace_id": data.workspace_id,
                "deployment_id": data.deployment_id,
                "sandbox_id": data.sandbox_id,
                "run_id": data.run_id,
                "template": data.template,
                "minutes": data.minutes,
                "body_hash": hashlib.sha256(payload).hexdigest(),
                "payload": payload.decode(),
                "received_at": received_us,
            }
        )
    if errors:
        raise Invalid(
            f"{len({e.get('index') for e in errors})} of {len(raw_events)} events are invalid; none was stored",
            errors[:MAX_REPORTED_ERRORS],
        )
    return rows


def dedupe_batch(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """Drop repeats inside the batch; a repeat with another body is a conflict.

    Returns the unique rows and, parallel to them, each row's index in the batch.
    """
    seen: dict[tuple[str, str], int] = {}
    unique: list[dict[str, Any]] = []
    indexes: list[int] = []
    for index, row in enumerate(rows):
        key = (row["source"], row["event_id"])
        first = seen.get(key)
        if first is None:
            seen[key] = len(unique)
            unique.append(row)
            indexes.append(index)
        elif unique[first]["body_hash"] != row["body_hash"]:
            raise _conflict(index)
    return unique, indexes


def _conflict(index: int) -> Conflict:
    return Conflict(
        "an event with this (source, id) was already received with a different body; none was stored",
        [field_error("(source, id) already used by a different event", "id", index)],
    )


async def store_batch(
    db: Database, rows: list[dict[str, Any]], *, after_insert: AfterInsert | None = None
) -> IngestResult:
    """Insert in one transaction; commit means durable, so the caller may answer 202."""
    unique, indexes = dedupe_batch(rows)
    if not unique:
        return IngestResult(accepted=0, duplicates=0)
    async with db.write() as session:
        conn = await session.connection()
        stmt = insert_ignore(EVENTS, db.dialect, ["source", "event_id"]).returning(EVENTS.c.id)
        inserted = len((await conn.execute(stmt, unique)).fetchall())
        if inserted < len(unique):
            await _check_repeats(conn, unique, indexes)
        if after_insert is not None and inserted:
            await after_insert(session, unique)
    return IngestResult(accepted=inserted, duplicates=len(rows) - inserted)


async def _check_repeats(conn: Any, unique: list[dict[str, Any]], indexes: list[int]) -> None:
    """Every key is stored now; any stored body that differs from ours is a 409."""
    for lo in range(0, len(unique), KEY_CHUNK):
        chunk = unique[lo : lo + KEY_CHUNK]
        keys = [(r["source"], r["event_id"]) for r in chunk]
        stored = dict(
            (((s, e), h) for s, e, h in await conn.execute(
                select(EVENTS.c.source, EVENTS.c.event_id, EVENTS.c.body_hash).where(
                    tuple_(EVENTS.c.source, EVENTS.c.event_id).in_(keys)
                )
            ))
        )
        for offset, row in enumerate(chunk):
            if stored[(row["source"], row["event_id"])] != row["body_hash"]:
                raise _conflict(indexes[lo + offset])
