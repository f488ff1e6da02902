"""Keep ``usage_intervals`` and ``usage_extensions`` equal to what the events say.

After each ingested batch, every sandbox the batch touched is derived again from all of
its stored events (core.lifecycle.derive), so the arrival order never matters. A sandbox
has tens of events, read through the (workspace_id, sandbox_id, time) index.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from metering.core.lifecycle import SandboxEvent, derive
from metering.core.periods import split_at_boundaries
from metering.events.models import Event
from metering.events.schemas import SANDBOX_TYPES
from metering.usage.models import UsageExtension, UsageInterval, UsageMark

EVENTS = Event.__table__
INTERVALS = UsageInterval.__table__
EXTENSIONS = UsageExtension.__table__
MARKS = UsageMark.__table__
KEY_CHUNK = 400

SandboxKey = tuple[str, str]  # (workspace_id, sandbox_id)


def touched_sandboxes(rows: Iterable[dict[str, Any]]) -> list[SandboxKey]:
    keys = {(r["workspace_id"], r["sandbox_id"]) for r in rows if r["type"] in SANDBOX_TYPES}
    return sorted(keys)


def month_pieces(start: int, end: int | None) -> list[tuple[int, int | None]]:
    """An interval cut at UTC month boundaries; an open one keeps its last piece open."""
    if end is not None:
        return list(split_at_boundaries(start, end, "month"))
    return [(start, None)]


async def _load_events(session: AsyncSession, keys: list[SandboxKey]) -> dict[SandboxKey, list[SandboxEvent]]:
    by_sandbox: dict[SandboxKey, list[SandboxEvent]] = defaultdict(list)
    cols = (EVENTS.c.workspace_id, EVENTS.c.sandbox_id, EVENTS.c.time, EVENTS.c.type, EVENTS.c.source,
            EVENTS.c.event_id, EVENTS.c.deployment_id, EVENTS.c.template, EVENTS.c.minutes)
    for lo in range(0, len(keys), KEY_CHUNK):
        chunk = keys[lo : lo + KEY_CHUNK]
        result = await session.execute(
            select(*cols).where(
                tuple_(EVENTS.c.workspace_id, EVENTS.c.sandbox_id).in_(chunk),
                EVENTS.c.type.in_(SANDBOX_TYPES),
            )
        )
        for ws, sb, time, type_, source, event_id, dep, template, minutes in result:
            by_sandbox[(ws, sb)].append(SandboxEvent(time, type_, source, event_id, dep, template, minutes))
    return by_sandbox


async def rederive(session: AsyncSession, keys: list[SandboxKey]) -> None:
    """Replace the billable rows of these sandboxes by a fresh derivation."""
    if not keys:
        return
    events = await _load_events(session, keys)
    intervals: list[dict[str, Any]] = []
    extensions: list[dict[str, Any]] = []
    for (ws, sb), sandbox_events in events.items():
        found, exts = derive(sandbox_events)
        for iv in found:
            for start, end in month_pieces(iv.start, iv.end):
                intervals.append({"workspace_id": ws, "deployment_id": iv.deployment_id, "sandbox_id": sb,
                                  "template": iv.template, "start": start, "end": end})
        for ext in exts:
            extensions.append({"workspace_id": ws, "deployment_id": ext.deployment_id, "sandbox_id": sb,
                               "template": ext.template, "time": ext.time, "count": ext.count})
    for lo in range(0, len(keys), KEY_CHUNK):
        chunk = keys[lo : lo + KEY_CHUNK]
        for table in (INTERVALS, EXTENSIONS):
            await session.execute(delete(table).where(tuple_(table.c.workspace_id, table.c.sandbox_id).in_(chunk)))
    if intervals:
        await session.execute(insert(INTERVALS), intervals)
    if extensions:
        await session.execute(insert(EXTENSIONS), extensions)


def earliest_change(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Per workspace, the earliest time from which these sandbox events can change usage.

    Derivation is a left-to-right fold over time, so a new event at ``t`` changes nothing
    before ``t``.
    """
    since: dict[str, int] = {}
    for r in rows:
        if r["type"] in SANDBOX_TYPES:
            ws = r["workspace_id"]
            since[ws] = min(since.get(ws, r["time"]), r["time"])
    return since


async def after_insert(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """The ingest hook: runs in the same transaction as the event insert."""
    await rederive(session, touched_sandboxes(rows))
    marks = [{"workspace_id": ws, "since": t} for ws, t in earliest_change(rows).items()]
    if marks:
        await session.execute(insert(MARKS), marks)
