"""Checking the audit chain, and the daily anchors that let a copy kept elsewhere check it.

An anchor is a small file per UTC day in the reports directory, ``@audit/<YYYY-MM-DD>.json``
``{"day", "seq", "hash"}``: the last entry written before that day ended.  The ``@`` keeps
the directory apart from the workspaces' (a workspace id cannot hold it).  Rewriting the
past then needs every copy of every anchor rewritten too.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from metering.audit.models import COUNTER, AuditEntry
from metering.audit.service import GENESIS, audit_time, entry_hash
from metering.core.periods import DAY_US
from metering.db import Database
from metering.invoices.models import Counter
from metering.reports.files import day_name, write_atomic

ANCHOR_DIR = "@audit"
PAGE = 1000


@dataclass(frozen=True)
class Verdict:
    checked: int
    bad_seq: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.bad_seq is None


def _check(row: AuditEntry, seq: int, prev: str) -> str | None:
    """What is wrong with the entry found where ``seq`` should be, after hash ``prev``."""
    if row.seq != seq:
        return f"entry {seq} is missing (the next entry is {row.seq})"
    try:
        data = json.loads(row.data)
    except ValueError:
        return "its data is not JSON"
    entry = {"seq": row.seq, "at": row.at, "kind": row.kind, "subject": row.subject, "data": data,
             "prev_hash": row.prev_hash}
    if row.prev_hash != prev:
        return "its prev_hash is not the previous entry's hash (an entry before it was changed, removed or moved)"
    if entry_hash(entry) != row.hash:
        return "its hash does not match its content (it was changed or moved)"
    return None


async def verify_chain(db: Database, anchors: Path | None = None) -> Verdict:
    """Walk the chain from seq 1; the first entry that breaks it, if any.  With ``anchors``
    (a directory of anchor files), each anchored entry must still have the anchored hash."""
    pinned = _read_anchors(anchors) if anchors else {}
    seq, prev = 0, GENESIS
    while True:
        async with db.read() as session:
            rows = list((await session.execute(
                select(AuditEntry).where(AuditEntry.seq > seq).order_by(AuditEntry.seq).limit(PAGE))).scalars())
            last = (await session.execute(select(Counter.value).where(Counter.name == COUNTER))).scalar() or 0
        for row in rows:
            problem = _check(row, seq + 1, prev)
            if problem is None and row.seq in pinned and pinned[row.seq][0] != row.hash:
                problem = f"its hash differs from the anchor of {pinned[row.seq][1]}"
            if problem is not None:
                return Verdict(seq, seq + 1, problem)
            seq, prev = row.seq, row.hash
        if len(rows) < PAGE:
            break
    if last > seq:
        return Verdict(seq, seq + 1, f"entry {seq + 1} is missing (entries were taken up to {last})")
    missing = sorted(s for s in pinned if s > seq)
    if missing:
        return Verdict(seq, missing[0], "an anchor names this entry, and the chain ends before it")
    return Verdict(seq)


def _read_anchors(directory: Path) -> dict[int, tuple[str, str]]:
    pinned = {}
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text())
        pinned[int(doc["seq"])] = (doc["hash"], doc["day"])
    return pinned


async def last_entry_before(session: AsyncSession, end_us: int) -> AuditEntry | None:
    query = select(AuditEntry).where(AuditEntry.at < audit_time(end_us)).order_by(AuditEntry.seq.desc()).limit(1)
    return (await session.execute(query)).scalars().first()


async def write_anchors(db: Database, reports_dir: str, start: int, end: int) -> int:
    """An anchor for each day in ``[start, end)`` (day aligned) that has none yet and
    whose end the chain had reached.  Existing anchors are never rewritten."""
    root = Path(reports_dir).resolve() / ANCHOR_DIR
    written = 0
    for day in range(start, end, DAY_US):
        path = root / f"{day_name(day)}.json"
        if path.exists():
            continue
        async with db.read() as session:
            row = await last_entry_before(session, day + DAY_US)
        if row is None:
            continue
        doc = {"day": day_name(day), "seq": row.seq, "hash": row.hash}
        await asyncio.to_thread(write_atomic, path, (json.dumps(doc, sort_keys=True) + "\n").encode())
        written += 1
    return written
