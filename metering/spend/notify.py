"""A webhook sent once per key: a notification row with a unique key, and its outbox event
in the same transaction.

Insert-or-ignore with RETURNING names the rows this transaction inserted: a key another
check (an earlier tick, another instance) already stored is skipped, and the webhooks
commit or roll back with exactly the rows that are new.  Restarts and concurrent
instances therefore send each one once (the outbox then delivers at least once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import Table, select, tuple_

from metering.db import Database, insert_ignore
from metering.db.base import in_slices
from metering.settings import Settings
from metering.webhooks.outbox import enqueue_many


async def notify_once(
    db: Database, settings: Settings, table: Table, key: Sequence[str], rows: list[dict], webhook: str,
    data_of: Callable[[dict], dict],
) -> int:
    """Store each of ``rows`` whose ``key`` is new and queue ``webhook`` with ``data_of(row)``."""
    columns = [table.c[k] for k in key]
    seen: set[tuple] = set()
    async with db.read() as session:
        for part in in_slices([tuple(r[k] for k in key) for r in rows]):
            seen.update(map(tuple, (await session.execute(select(*columns).where(tuple_(*columns).in_(part)))).all()))
    new = [r for r in rows if tuple(r[k] for k in key) not in seen]
    if not new:
        return 0
    stmt = insert_ignore(table, db.dialect, key).returning(*columns)
    async with db.write() as session:
        inserted = set(map(tuple, (await session.execute(stmt, new)).all()))
        datas = [data_of(r) for r in new if tuple(r[k] for k in key) in inserted]
        await enqueue_many(session, webhook, datas, settings=settings)
    return len(datas)
