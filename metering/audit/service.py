"""Append to the audit trail, in the caller's transaction, and read it back.

``record`` runs inside the transaction that makes the change it records, so a commit stores
both and a rollback or a crash neither.  Each entry's ``hash`` is SHA-256 (hex) of the
canonical JSON (sorted keys, no spaces, UTF-8) of the entry without ``hash``; its
``prev_hash`` is the previous entry's ``hash`` (64 zeros for the first), so changing,
removing or reordering any entry breaks the chain from there on (audit.verify).

Appends are serialized by the ``counters`` row ``audit``: the UPDATE that takes the next
``seq`` locks it until commit on PostgreSQL (SQLite writers hold the database lock anyway),
so two instances never chain onto the same entry, and a rolled-back seq is taken again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from metering.audit.models import COUNTER, AuditEntry
from metering.core.timeutil import from_us
from metering.db.base import now_us
from metering.invoices.models import Counter

GENESIS = "0" * 64
# Who makes the change: the token id of the API caller (``operator`` for the admin token
# from the environment), set by the auth guard; ``system`` for the scheduler and the CLI.
actor: ContextVar[str] = ContextVar("audit_actor", default="system")
# Test hook (tests/audit): with this set to a file path, ``record`` creates the file once its
# entry is written and then waits, before the caller's transaction commits, to be killed.
PAUSE_ENV = "METERING_TEST_AUDIT_PAUSE"


def audit_time(us: int) -> str:
    """``at``: UTC with exactly six fractional digits, so entries sort by time as text."""
    d = from_us(us)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond:06d}Z"


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(entry: dict[str, Any]) -> str:
    body = {key: value for key, value in entry.items() if key != "hash"}
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def entry_view(row: AuditEntry) -> dict[str, Any]:
    return {"seq": row.seq, "at": row.at, "kind": row.kind, "subject": row.subject, "data": json.loads(row.data),
            "prev_hash": row.prev_hash, "hash": row.hash}


async def _next_seq(session: AsyncSession) -> int:
    take = update(Counter).where(Counter.name == COUNTER).values(value=Counter.value + 1).returning(Counter.value)
    seq = (await session.execute(take)).scalar_one_or_none()
    if seq is None:  # a database whose counters row was lost: start it (the unique name decides a race)
        session.add(Counter(name=COUNTER, value=0))
        await session.flush()
        seq = (await session.execute(take)).scalar_one()
    return seq


async def record(session: AsyncSession, kind: str, subject: str, data: dict[str, Any]) -> AuditEntry:
    """Append one entry in ``session``'s transaction (call it after the change it records)."""
    seq = await _next_seq(session)
    prev = (await session.execute(select(AuditEntry.hash).where(AuditEntry.seq == seq - 1))).scalar()
    entry = {"seq": seq, "at": audit_time(now_us()), "kind": kind, "subject": subject,
             "data": {**data, "actor": actor.get()}, "prev_hash": prev or GENESIS}
    row = AuditEntry(**{**entry, "data": canonical(entry["data"])}, hash=entry_hash(entry))
    session.add(row)
    await session.flush()
    if os.environ.get(PAUSE_ENV):
        Path(os.environ[PAUSE_ENV]).write_text(str(seq))
        await asyncio.sleep(3600)
    return row


async def page(session: AsyncSession, after: int, limit: int) -> list[AuditEntry]:
    query = select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq).limit(limit)
    return list((await session.execute(query)).scalars())
