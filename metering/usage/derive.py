"""Keep ``usage_intervals`` and ``usage_extensions`` equal to what the events say.

Billing a sandbox is a left-to-right fold over its lifecycle events in order key
``(time, lifecycle rank, source, id)`` (CONTRACT 4.1-4.3, core.lifecycle).  ``sandbox_states``
keeps where each sandbox's fold stands after all of its stored events, so a batch is applied
in the same transaction that stores it:

- incrementally, when every new event of a sandbox sorts after the last one it has applied:
  the fold goes on from the stored state and only what the new events add is written;
- from scratch otherwise (an event arrived late, or repeats a stored one): the sandbox's
  rows are derived again from all of its stored events.

Either way the result is what ``core.lifecycle.derive`` gives for all the events in order,
so the arrival order never changes the bill.  The caller (events.service) serializes ingest
transactions, so two batches never fold the same sandbox at once.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection

from metering.core.lifecycle import EVENT_RANK, EXTENSION_MINUTES
from metering.core.periods import DAY_US, next_boundary
from metering.db.upsert import BulkSQL
from metering.events.models import Event
from metering.events.schemas import EVENT_COLUMNS, SANDBOX_TYPES
from metering.usage.models import SandboxState, UsageExtension, UsageInterval, UsageMark

EVENTS = Event.__table__
INTERVALS = UsageInterval.__table__
EXTENSIONS = UsageExtension.__table__
MARKS = UsageMark.__table__
STATES = SandboxState.__table__

RUNNING, EXTENDED, STOPPED, TERMINATED = (EVENT_RANK[f"sandbox.{t}"] for t in ("running", "extended", "stopped", "terminated"))
SANDBOX_TYPE_LIST = ", ".join(f"'{t}'" for t in SANDBOX_TYPES)  # constants, safe to inline

OWNER_COLUMNS = ("workspace_id", "deployment_id", "sandbox_id", "template")
INTERVAL_COLUMNS = (*OWNER_COLUMNS, "start", "end")
EXTENSION_COLUMNS = (*OWNER_COLUMNS, "time", "count")
STATE_COLUMNS = ("workspace_id", "sandbox_id", "last_time", "last_rank", "last_source", "last_event_id",
                 "open_start", "open_template", "open_deployment", "terminated")
STATE_UPSERT = "ON CONFLICT (workspace_id, sandbox_id) DO UPDATE SET " + ", ".join(
    f'"{c}" = excluded."{c}"' for c in STATE_COLUMNS[2:]
)

SandboxKey = tuple[str, str]  # (workspace_id, sandbox_id)
# One lifecycle event, sortable by its order key (the first four fields; (source, id) is unique):
# (time, rank, source, event_id, deployment_id, template, minutes)
LifecycleEvent = tuple[int, int, str, str, str, Any, Any]
# lifecycle_events unpacks stored-event rows by position.
assert EVENT_COLUMNS[:10] == ("source", "event_id", "type", "time", "workspace_id", "deployment_id",
                              "sandbox_id", "run_id", "template", "minutes")


@lru_cache(maxsize=8192)
def _month_end_after_day(day: int) -> int:
    return next_boundary(day * DAY_US, "month")


def month_pieces(start: int, end: int) -> list[tuple[int, int]]:
    """A closed interval cut at UTC month boundaries (stored pieces never cross one)."""
    pieces = []
    while start < end:
        stop = min(_month_end_after_day(start // DAY_US), end)
        pieces.append((start, stop))
        start = stop
    return pieces


@dataclass(slots=True)
class Fold:
    """A sandbox's billing state after the events applied so far (core.lifecycle.derive)."""

    last: tuple | None = None  # order key of the last applied event
    open_start: int | None = None
    open_template: str | None = None
    open_deployment: str | None = None
    terminated: bool = False

    @property
    def open(self) -> tuple | None:
        return None if self.open_start is None else (self.open_start, self.open_template, self.open_deployment)


class Changes:
    """The rows one batch adds to or removes from the usage tables."""

    def __init__(self) -> None:
        self.intervals: list[tuple] = []
        self.extensions: list[tuple] = []
        self.drop_open: list[SandboxKey] = []  # their open interval row is replaced or closed
        self.states: list[tuple] = []

    def apply(self, key: SandboxKey, fold: Fold, events: list[LifecycleEvent]) -> None:
        """Continue ``fold`` over ``events`` (sorted, all after ``fold.last``)."""
        ws, sb = key
        before = fold.open
        for time, rank, source, event_id, deployment, template, minutes in events:
            fold.last = (time, rank, source, event_id)
            if fold.terminated:
                continue  # final: later events are stored but bill nothing
            if rank == RUNNING:
                if fold.open_start is None:  # the opening event's template and deployment (rule 3)
                    fold.open_start, fold.open_template, fold.open_deployment = time, template, deployment
            elif rank == EXTENDED:
                self.extensions.append((ws, deployment, sb, template, time, minutes // EXTENSION_MINUTES))
            elif rank >= STOPPED:
                if fold.open_start is not None:
                    if time > fold.open_start:  # a zero-length interval bills nothing
                        self.intervals.extend(
                            (ws, fold.open_deployment, sb, fold.open_template, s, e)
                            for s, e in month_pieces(fold.open_start, time)
                        )
                    fold.open_start = fold.open_template = fold.open_deployment = None
                fold.terminated = rank == TERMINATED
        after = fold.open
        if before is not None and before != after:
            self.drop_open.append(key)
        if after is not None and before != after:
            self.intervals.append((ws, fold.open_deployment, sb, fold.open_template, fold.open_start, None))
        assert fold.last is not None
        self.states.append((ws, sb, *fold.last, fold.open_start, fold.open_template, fold.open_deployment,
                            fold.terminated))


def lifecycle_events(rows: list[tuple]) -> dict[SandboxKey, list[LifecycleEvent]]:
    """The batch's sandbox events (rows in EVENT_COLUMNS order) per sandbox, each list in fold order."""
    by_sandbox: dict[SandboxKey, list[LifecycleEvent]] = defaultdict(list)
    for source, event_id, type_, time, ws, dep, sb, _run, template, minutes, *_ in rows:
        rank = EVENT_RANK.get(type_)
        if rank is not None:
            by_sandbox[(ws, sb)].append((time, rank, source, event_id, dep, template, minutes))
    for events in by_sandbox.values():
        events.sort()
    return by_sandbox


def _load_states(conn: Connection, sql: BulkSQL, keys: list[SandboxKey]) -> dict[SandboxKey, Fold]:
    head = "SELECT " + ", ".join(f'"{c}"' for c in STATE_COLUMNS) + " FROM sandbox_states"
    states = {}
    for stmt, params in sql.keyed_chunks(STATES, head, ("workspace_id", "sandbox_id"), keys):
        for ws, sb, t, rank, src, eid, o_start, o_tpl, o_dep, term in conn.exec_driver_sql(stmt, params):
            states[(ws, sb)] = Fold((t, rank, src, eid), o_start, o_tpl, o_dep, bool(term))
    return states


def _load_all_events(
    conn: Connection, sql: BulkSQL, keys: list[SandboxKey]
) -> dict[SandboxKey, list[LifecycleEvent]]:
    """Every stored lifecycle event of these sandboxes, read through ix_events_sandbox_time."""
    head = ("SELECT workspace_id, sandbox_id, time, type, source, event_id, deployment_id, template, minutes "
            "FROM events")
    by_sandbox: dict[SandboxKey, list[LifecycleEvent]] = defaultdict(list)
    tail = f"AND type IN ({SANDBOX_TYPE_LIST})"
    for stmt, params in sql.keyed_chunks(EVENTS, head, ("workspace_id", "sandbox_id"), keys, tail):
        for ws, sb, time, type_, src, eid, dep, tpl, minutes in conn.exec_driver_sql(stmt, params):
            by_sandbox[(ws, sb)].append((time, EVENT_RANK[type_], src, eid, dep, tpl, minutes))
    for events in by_sandbox.values():
        events.sort()
    return by_sandbox


def _execute(conn: Connection, chunks: list[tuple[str, Any]]) -> None:
    for stmt, params in chunks:
        conn.exec_driver_sql(stmt, params)


def after_insert(conn: Connection, rows: list[tuple]) -> None:
    """The ingest hook: bring the usage tables up to date with just-stored events, in their transaction.

    ``rows`` are in ``events.schemas.EVENT_COLUMNS`` order.
    """
    new = lifecycle_events(rows)
    if not new:
        return
    sql = BulkSQL(conn.dialect.name)
    keys = sorted(new)
    states = _load_states(conn, sql, keys)
    changes = Changes()
    redo: list[SandboxKey] = []
    for key in keys:
        fold = states.get(key)
        if fold is None or new[key][0][:4] > fold.last:
            changes.apply(key, fold or Fold(), new[key])
        else:
            redo.append(key)
    if redo:  # out of order or repeated: derive these sandboxes again from all their events
        owner = ("workspace_id", "sandbox_id")
        for table in (INTERVALS, EXTENSIONS):
            _execute(conn, sql.keyed_chunks(table, f'DELETE FROM "{table.name}"', owner, redo))
        stored = _load_all_events(conn, sql, redo)
        for key in redo:
            changes.apply(key, Fold(), stored[key])
    _execute(conn, sql.keyed_chunks(INTERVALS, "DELETE FROM usage_intervals", ("workspace_id", "sandbox_id"),
                                    changes.drop_open, 'AND "end" IS NULL'))
    _execute(conn, sql.insert_chunks(INTERVALS, INTERVAL_COLUMNS, changes.intervals))
    _execute(conn, sql.insert_chunks(EXTENSIONS, EXTENSION_COLUMNS, changes.extensions))
    _execute(conn, sql.insert_chunks(STATES, STATE_COLUMNS, changes.states, STATE_UPSERT))
    _execute(conn, sql.insert_chunks(MARKS, ("workspace_id", "since"), earliest_change(new)))


def earliest_change(new: dict[SandboxKey, list[LifecycleEvent]]) -> list[tuple[str, int]]:
    """Per workspace, the earliest time from which these sandbox events can change usage.

    Derivation is a left-to-right fold over time, so a new event at ``t`` changes nothing
    before ``t``.  Billing (invoices) reads these marks to find finalized periods to adjust.
    """
    since: dict[str, int] = {}
    for (ws, _), events in new.items():
        first = events[0][0]
        if first < since.get(ws, first + 1):
            since[ws] = first
    return sorted(since.items())
