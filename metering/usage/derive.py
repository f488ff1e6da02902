"""Keep ``usage_intervals`` and ``usage_extensions`` equal to what the events say.

Billing a sandbox is a left-to-right fold over its lifecycle events in order key
``(time, lifecycle rank, source, id)`` (CONTRACT 4.1-4.3, core.lifecycle).  ``sandbox_states``
keeps where each sandbox's fold stands after all of its stored events, and those events'
fold fields (its history), so a batch is applied in the same transaction that stores it:

- incrementally, when every new event of a sandbox sorts after the last one it has applied:
  the fold goes on from the stored state, only what the new events add is written, and
  their fields are appended to the history by the upsert itself (nothing read back);
- from scratch otherwise (an event arrived late, or repeats a stored one): the rows the
  stored history derived are deleted by their own keys, and the rows of the merged history
  inserted.

The history is sealed in chunks (``sandbox_history_chunks``) and a tail of at most
``HISTORY_CHUNK`` events in the state row (more only when one batch brings more): appending
rewrites the state row, so with the whole history there an event in order cost time in
proportion to its sandbox's age (a 190-event sandbox's row is ~18 KB, rewritten per batch).
When an append would pass the bound, the statement that writes the state moves the stored
tail into the next chunk, server-side, and the new events become the tail.  A late event
reads the chunks and the tail, and writes back from the first chunk it changes.

The history is why no index keys events or usage rows by sandbox: such an index takes one
random-order b-tree insert per event (and a dirty page per event at commit once the table
is big), for a lookup only late events need.

Either way the result is what ``core.lifecycle.derive`` gives for all the events in order,
so the arrival order never changes the bill.  The caller (events.service) serializes ingest
transactions, so two batches never fold the same sandbox at once.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, defaultdict
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from time import perf_counter
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy import Connection

from metering.core.lifecycle import EVENT_RANK, EXTENSION_MINUTES, LIFETIME_US, MINUTE_US
from metering.core.periods import DAY_US, next_boundary
from metering.db.base import now_us
from metering.db.upsert import BulkSQL
from metering.events.service import PIECE_EVENTS, Derivation
from metering.events.schemas import EVENT_COLUMNS
from metering.usage.models import ChangedDay, SandboxHistoryChunk, SandboxState, UsageExtension, UsageInterval

INTERVALS = UsageInterval.__table__
EXTENSIONS = UsageExtension.__table__
CHANGED_DAYS = ChangedDay.__table__
STATES = SandboxState.__table__
CHUNKS = SandboxHistoryChunk.__table__
# Events a state row's history tail holds before it is sealed as a chunk: rewriting the row
# costs what it holds, and a row of ~1 KB still shares its page with a few others.
HISTORY_CHUNK = 8
# How long the derivation may hold the event loop between two passes (_Pacer), once it has
# folded PIECE_EVENTS events.  On PostgreSQL, at 1,000-event requests from 4 clients, a pass
# every 300 events cost 7-10% of the rate against none at all; this bound, alternating with
# it over 7 pairs: 26,901 against 28,498 events/s on average (2026-12-04, BENCHMARKS).
HOLD_SECONDS = 0.010

RUNNING, EXTENDED, STOPPED, TERMINATED = (EVENT_RANK[f"sandbox.{t}"] for t in ("running", "extended", "stopped", "terminated"))

OWNER_COLUMNS = ("workspace_id", "deployment_id", "sandbox_id", "template")
INTERVAL_COLUMNS = (*OWNER_COLUMNS, "start", "end", "lifetime_end")
EXTENSION_COLUMNS = (*OWNER_COLUMNS, "time", "count")
# A sandbox's usage rows by their own keys (its intervals never share a start), read through
# ix_usage_intervals_ws_start / ix_usage_extensions_ws_time.
INTERVAL_KEY = ("workspace_id", "start", "sandbox_id")
EXTENSION_KEY = ("workspace_id", "time", "sandbox_id")
FOLD_COLUMNS = ("workspace_id", "sandbox_id", "last_time", "last_rank", "last_source", "last_event_id",
                "open_start", "open_template", "open_deployment", "terminated")
# After the history, so migration 0006 (which zips FOLD_COLUMNS with these rows) keeps working.
STATE_COLUMNS = (*FOLD_COLUMNS, "history", "open_lifetime_end", "history_events", "history_chunks")
_SET_FOLD = "ON CONFLICT (workspace_id, sandbox_id) DO UPDATE SET " + ", ".join(
    f'"{c}" = excluded."{c}"' for c in (*FOLD_COLUMNS[2:], "open_lifetime_end", "history_events", "history_chunks")
)
STATE_APPEND = f"{_SET_FOLD}, history = sandbox_states.history || excluded.history"
STATE_REPLACE = f"{_SET_FOLD}, history = excluded.history"
# The stored tail of each keyed sandbox becomes its next chunk (before its state row is replaced).
SEAL_TAIL = ("INSERT INTO sandbox_history_chunks (workspace_id, sandbox_id, seq, events) "
             "SELECT workspace_id, sandbox_id, history_chunks, history FROM sandbox_states")
# A day changed again: a new version, so a billing run that read the old one keeps the row.
CHANGED_DAY_UPSERT = "ON CONFLICT (workspace_id, day) DO UPDATE SET version = usage_changed_days.version + 1"
# A day counts as ended this long before it does: an ingest transaction whose clock said
# "not yet ended" may commit after a billing run (on another machine's clock) closed it.
CLOCK_MARGIN_US = 300_000_000
FOREVER = 2**62

SandboxKey = tuple[str, str]  # (workspace_id, sandbox_id)
# One lifecycle event, sortable by its order key (the first four fields; (source, id) is unique):
# (time, rank, source, event_id, deployment_id, template, minutes)
LifecycleEvent = tuple[int, int, str, str, str, Any, Any]
# lifecycle_events unpacks stored-event rows by position.
assert EVENT_COLUMNS == ("source", "event_id", "type", "time", "workspace_id", "deployment_id",
                         "sandbox_id", "run_id", "template", "minutes", "body_hash", "payload", "received_at")


_encode = msgspec.json.Encoder().encode
_decode_history = msgspec.json.Decoder(list[tuple[int, int, str, str, str, Any, Any]]).decode


def history_text(events: list[LifecycleEvent]) -> str:
    """Events as ``sandbox_states.history`` holds them: JSON arrays, each followed by a comma,
    so appending is concatenating (``[time, rank, source, id, deployment, template, minutes],``)."""
    return _encode(events)[1:-1].decode() + "," if events else ""


def parse_history(text: str) -> list[LifecycleEvent]:
    return _decode_history("[" + text[:-1] + "]") if text else []


def merge(stored: list[LifecycleEvent], new: list[LifecycleEvent]) -> list[LifecycleEvent]:
    """Both lists' events in fold order, each ``(source, id)`` once (a repeat is not a new event)."""
    by_key = {(e[2], e[3]): e for e in new}
    by_key.update({(e[2], e[3]): e for e in stored})
    return sorted(by_key.values())


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
    # When the open interval's paid lifetime ends: 15 minutes from its start plus the minutes
    # of each extension applied while it is open (CONTRACT 10, the lifetime guard).
    open_lifetime_end: int | None = None

    @property
    def open(self) -> tuple | None:
        # The lifetime end is part of it: an extension rewrites the open row.
        return None if self.open_start is None else (
            self.open_start, self.open_template, self.open_deployment, self.open_lifetime_end)


@dataclass(slots=True)
class Shelf:
    """Where a sandbox's stored history is: ``chunks`` sealed chunks, then ``tail`` events in its state row."""

    tail: int = 0
    chunks: int = 0


class Changes:
    """The rows one batch adds to or removes from the usage tables."""

    def __init__(self) -> None:
        self.intervals: list[tuple] = []
        self.extensions: list[tuple] = []
        self.drop_open: list[tuple[str, int, str]] = []  # (workspace, start, sandbox): replaced or closed
        # (lifetime end, workspace, start, sandbox): an open interval extended, updated in place
        # (a column no index holds: no index entry moves, a HOT update on PostgreSQL).
        self.extend_open: list[tuple[int | None, str, int, str]] = []
        self.states: list[tuple] = []  # in STATE_COLUMNS order; history: the events to append
        self.rewritten: list[tuple] = []  # the same, history: the whole tail

    def apply(self, key: SandboxKey, fold: Fold, events: list[LifecycleEvent], *, shelf: Shelf | None = None,
              rewrite: bool = False) -> None:
        """Continue ``fold`` over ``events`` (sorted, all after ``fold.last``): the rows they
        add, the open interval they replace, close or extend, and the state row.

        The state row: ``events`` appended to the history's tail, ``shelf`` saying where it
        stands (none: a sandbox with no history); with ``rewrite`` the tail is replaced by
        ``events``, and ``shelf`` says where it will stand.
        """
        ws, sb = key
        before = fold.open
        self.fold(key, fold, events)
        after = fold.open
        if before is not None and after is not None and before[:3] == after[:3] and before != after:
            self.extend_open.append((after[3], ws, after[0], sb))
            before = after
        if before is not None and before != after:
            self.drop_open.append((ws, before[0], sb))
        if after is not None and before != after:
            self.intervals.append(_open_row(key, fold))
        assert fold.last is not None
        shelf = shelf or Shelf()
        (self.rewritten if rewrite else self.states).append(_state_row(
            key, fold, events, len(events) if rewrite else shelf.tail + len(events), shelf.chunks))

    def fold(self, key: SandboxKey, fold: Fold, events: list[LifecycleEvent]) -> None:
        """Continue ``fold`` over ``events`` (sorted, all after ``fold.last``), adding the
        intervals they close and the extensions they bring (not the interval left open)."""
        ws, sb = key
        if events:
            fold.last = events[-1][:4]
        for time, rank, _source, _event_id, deployment, template, minutes in events:
            if fold.terminated:
                break  # final: later events are stored but bill nothing
            if rank == RUNNING:
                if fold.open_start is None:  # the opening event's template and deployment (rule 3)
                    fold.open_start, fold.open_template, fold.open_deployment = time, template, deployment
                    fold.open_lifetime_end = time + LIFETIME_US
            elif rank == EXTENDED:
                self.extensions.append((ws, deployment, sb, template, time, minutes // EXTENSION_MINUTES))
                if fold.open_lifetime_end is not None:
                    fold.open_lifetime_end += minutes * MINUTE_US
            elif rank >= STOPPED:
                if fold.open_start is not None:
                    if time > fold.open_start:  # a zero-length interval bills nothing
                        self.intervals.extend(
                            (ws, fold.open_deployment, sb, fold.open_template, s, e, fold.open_lifetime_end)
                            for s, e in month_pieces(fold.open_start, time)
                        )
                    fold.open_start = fold.open_template = fold.open_deployment = fold.open_lifetime_end = None
                fold.terminated = rank == TERMINATED

    def fold_to_end(self, key: SandboxKey, fold: Fold, events: list[LifecycleEvent]) -> None:
        """``fold``, and the interval still open after the events as a row too."""
        self.fold(key, fold, events)
        if fold.open_start is not None:
            self.intervals.append(_open_row(key, fold))


def _open_row(key: SandboxKey, fold: Fold) -> tuple:
    """The interval ``fold`` has open, as a row in INTERVAL_COLUMNS order (no end yet)."""
    return (key[0], fold.open_deployment, key[1], fold.open_template, fold.open_start, None, fold.open_lifetime_end)


def _state_row(key: SandboxKey, fold: Fold, tail: list[LifecycleEvent], tail_events: int, chunks: int) -> tuple:
    """A ``sandbox_states`` row in STATE_COLUMNS order; its history: ``tail`` (appended, or the whole tail)."""
    assert fold.last is not None
    return (*key, *fold.last, fold.open_start, fold.open_template, fold.open_deployment, fold.terminated,
            history_text(tail), fold.open_lifetime_end, tail_events, chunks)


def lifecycle_events(rows: list[tuple]) -> dict[SandboxKey, list[LifecycleEvent]]:
    """The batch's sandbox events (rows in EVENT_COLUMNS order) per sandbox, each list in fold order."""
    by_sandbox: dict[SandboxKey, list[LifecycleEvent]] = defaultdict(list)
    rank_of = EVENT_RANK.get
    # Every name unpacked (no ``*_``, which builds a list per row): a fifth of this loop's time.
    for source, event_id, type_, time, ws, dep, sb, _run, template, minutes, _hash, _payload, _received in rows:
        rank = rank_of(type_)
        if rank is not None:
            by_sandbox[(ws, sb)].append((time, rank, source, event_id, dep, template, minutes))
    for events in by_sandbox.values():
        if len(events) > 1:
            events.sort()
    return by_sandbox


def stored_lifecycles(conn: Connection, chunk: int = 1000) -> Iterator[tuple[SandboxKey, list[LifecycleEvent]]]:
    """Every sandbox's stored lifecycle events, in fold order, streamed from the events table.

    For migrations that fill ``sandbox_states`` from the events already stored (0006, 0010);
    ingest itself never reads events by sandbox.
    """
    events = sa.table("events", *(sa.column(c) for c in (
        "workspace_id", "sandbox_id", "time", "type", "source", "event_id", "deployment_id", "template", "minutes")))
    query = sa.select(events).where(events.c.type.in_(list(EVENT_RANK))).order_by(
        events.c.workspace_id, events.c.sandbox_id)
    rows = conn.execute(query, execution_options={"yield_per": chunk})
    for key, group in itertools.groupby(rows, key=lambda r: (r[0], r[1])):
        yield key, sorted((t, EVENT_RANK[ty], s, e, d, tpl, m) for _, _, t, ty, s, e, d, tpl, m in group)


def _load_states(sql: BulkSQL, keys: list[SandboxKey]) -> dict[SandboxKey, tuple[Fold, Shelf]]:
    columns = (*FOLD_COLUMNS, "open_lifetime_end", "history_events", "history_chunks")
    head = "SELECT " + ", ".join(f'"{c}"' for c in columns) + " FROM sandbox_states"
    states = {}
    for stmt, params in sql.keyed_chunks(STATES, head, ("workspace_id", "sandbox_id"), keys):
        for ws, sb, t, rank, src, eid, o_start, o_tpl, o_dep, term, o_life, tail, chunks in sql.rows(stmt, params):
            states[(ws, sb)] = (Fold((t, rank, src, eid), o_start, o_tpl, o_dep, bool(term), o_life), Shelf(tail, chunks))
    return states


def _load_histories(sql: BulkSQL, keys: list[SandboxKey]) -> dict[SandboxKey, list[list[LifecycleEvent]]]:
    """Each sandbox's history: its chunks in order, then its tail (the last list)."""
    histories: dict[SandboxKey, list[list[LifecycleEvent]]] = defaultdict(list)
    head = "SELECT workspace_id, sandbox_id, seq, events FROM sandbox_history_chunks"
    chunks = [row for stmt, params in sql.keyed_chunks(CHUNKS, head, ("workspace_id", "sandbox_id"), keys)
              for row in sql.rows(stmt, params)]
    for ws, sb, _, text in sorted(chunks):
        histories[(ws, sb)].append(parse_history(text))
    head = "SELECT workspace_id, sandbox_id, history FROM sandbox_states"
    for stmt, params in sql.keyed_chunks(STATES, head, ("workspace_id", "sandbox_id"), keys):
        for ws, sb, text in sql.rows(stmt, params):
            histories[(ws, sb)].append(parse_history(text))
    return histories


def kept_chunks(chunks: list[list[LifecycleEvent]], first_new: tuple) -> int:
    """How many leading chunks hold only events before ``first_new`` (a late event's order
    key): the merged history starts with them unchanged."""
    kept = 0
    while kept < len(chunks) and (not chunks[kept] or chunks[kept][-1][:4] < first_new):
        kept += 1
    return kept


def apply(sql: BulkSQL, new: dict[SandboxKey, list[LifecycleEvent]]) -> None:
    """Bring the usage tables up to date with just-stored events (``lifecycle_events`` of their
    rows), in their transaction, and record the ended days whose usage this changed.

    One read of the sandboxes' states, one write of what they derive, however many events:
    every statement here is waited for by the other ingest transactions (events.service
    ``PG_INGEST_SERIAL``).  The folds between them pass the event loop now and then
    (``_Pacer``: on PostgreSQL this transaction runs on it).
    """
    if not new:
        return
    keys = sorted(new)
    states = _load_states(sql, keys)
    batch, pace = _Batch(), _Pacer(sql)
    for key in keys:
        pace(len(new[key]))
        batch.add(key, new[key], *states.get(key, (None, None)))
    deletes = _rederive(sql, batch, pace) if batch.redo else []
    changes = batch.changes
    deletes += sql.for_each_key(INTERVALS, "DELETE FROM usage_intervals", INTERVAL_KEY, changes.drop_open,
                                'AND "end" IS NULL')
    # The deletes only remove rows stored before this batch, and no two statements write one
    # row (a sandbox's state is appended to or rewritten, not both; its chunks are sealed or
    # dropped, not both): they may go together.  Sealing reads the tails before the state rows
    # are written (PostgreSQL: one statement, one snapshot; SQLite: in this order).
    sql.execute_together([
        *deletes,
        *sql.keyed_chunks(STATES, SEAL_TAIL, ("workspace_id", "sandbox_id"), batch.sealing),
        *sql.update_chunks(INTERVALS, ("lifetime_end",), INTERVAL_KEY, changes.extend_open, 'AND "end" IS NULL'),
        *sql.insert_chunks(INTERVALS, INTERVAL_COLUMNS, changes.intervals),
        *sql.insert_chunks(EXTENSIONS, EXTENSION_COLUMNS, changes.extensions),
        *sql.insert_chunks(STATES, STATE_COLUMNS, changes.states, STATE_APPEND),
        *sql.insert_chunks(STATES, STATE_COLUMNS, changes.rewritten, STATE_REPLACE),
        *sql.insert_chunks(CHANGED_DAYS, ("workspace_id", "day", "version"),
                           [(ws, day, 1) for ws, day in ended_days(batch.changed, now_us() + CLOCK_MARGIN_US)],
                           CHANGED_DAY_UPSERT),
    ])


class _Pacer:
    """``pace(n)`` before folding ``n`` events: a pass of the event loop (``Statements.pause``)
    once ``PIECE_EVENTS`` have been folded and ``HOLD_SECONDS`` have passed since the last, so
    a big group's derivation holds the loop some milliseconds at a time, not for all of it.

    Not more often: this fold is what every other ingest transaction waits for (on PostgreSQL
    it holds the ingest lock), and each pass puts it behind every request being parsed, a
    piece of ``PIECE_EVENTS`` events each.  Parsing the next requests is better done while
    this transaction's statements are in the database.
    """

    def __init__(self, sql: BulkSQL) -> None:
        self.sql, self.folded, self.since = sql, 0, perf_counter()

    def __call__(self, events: int) -> None:
        if self.folded >= PIECE_EVENTS and perf_counter() - self.since >= HOLD_SECONDS:
            self.sql.run.pause()
            self.folded, self.since = 0, perf_counter()
        self.folded += events


class _Batch:
    """What one ingest transaction derives, sandbox by sandbox (``add``), before it is written."""

    def __init__(self) -> None:
        self.changes = Changes()
        self.changed: list[tuple[str, int, int]] = []  # (workspace, from, until): usage changed in [from, until)
        self.redo: dict[SandboxKey, list[LifecycleEvent]] = {}  # derived again from all their events
        self.sealing: list[SandboxKey] = []  # stored tails that become chunks

    def add(self, key: SandboxKey, events: list[LifecycleEvent], fold: Fold | None, shelf: Shelf | None) -> None:
        """A sandbox's new events (in fold order), from its stored state (None: a new sandbox)."""
        if fold is not None and events[0][:4] <= fold.last:  # out of order or repeated
            self.redo[key] = events
            return
        changes = self.changes
        marks = (len(changes.intervals), len(changes.extensions), len(changes.drop_open), len(changes.extend_open))
        if shelf is not None and shelf.tail and shelf.tail + len(events) > HISTORY_CHUNK:
            self.sealing.append(key)
            changes.apply(key, fold, events, shelf=Shelf(0, shelf.chunks + 1), rewrite=True)
        else:
            changes.apply(key, fold or Fold(), events, shelf=shelf)
        # What the events add; an open interval closed or extended changes every day after.
        reopened = len(changes.drop_open) > marks[2] or len(changes.extend_open) > marks[3]
        until = FOREVER if reopened else changed_until(
            [], [], changes.intervals[marks[0]:], changes.extensions[marks[1]:])
        if until is not None:
            self.changed.append((key[0], events[0][0], until))


def _rederive(sql: BulkSQL, batch: _Batch, pace: _Pacer) -> list[tuple[str, Any]]:
    """Derive ``batch.redo``'s sandboxes again from their stored history and new events: their
    new rows into ``batch.changes``, the statements that delete the rows they replace."""
    redo = sorted(batch.redo)
    stored = _load_histories(sql, redo)
    gone: dict[str, list[tuple]] = {"intervals": [], "extensions": [], "chunks": []}  # keys to delete
    changes = batch.changes
    for key in redo:
        new = batch.redo[key]
        *chunks, tail = stored[key]
        events = [e for part in (*chunks, tail) for e in part]
        pace(len(events) + len(new))
        # A fold goes left to right: the stored events before the first new one derive the
        # same rows and leave the same state, with or without the new ones.  They are folded
        # once; only the rest twice, as stored and merged with the new ones, and compared.
        # (Late events are mostly late by little: the rest is a few events.)
        first = new[0][:4]
        split = bisect.bisect_left(events, first)  # events[:split]: those before ``first``
        earlier, at_split = Changes(), Fold()
        earlier.fold(key, at_split, events[:split])
        old, fresh = Changes(), Changes()  # what the rest derived; what it does with the new events
        old.fold_to_end(key, replace(at_split), events[split:])
        merged = merge(events[split:], new)  # a repeat of a stored event has its order key
        fold = replace(at_split)
        fresh.fold_to_end(key, fold, merged)
        kept = kept_chunks(chunks, first)  # the rest of the history becomes the tail
        rest = events[sum(map(len, chunks[:kept])):split] + merged  # kept chunks end before ``first``
        changes.rewritten.append(_state_row(key, fold, rest, len(rest), kept))
        gone["chunks"] += [(*key, seq) for seq in range(kept, len(chunks))]
        # Only the rows that differ are written: a late event in a long history changes a few.
        for kind in ("intervals", "extensions"):
            deleted, inserted = differing(getattr(old, kind), getattr(fresh, kind), _row_key)
            gone[kind] += deleted
            # Rows are deleted by key: an earlier row with a deleted key goes back in.
            keys = set(deleted)
            getattr(changes, kind).extend(
                [*inserted, *(row for row in getattr(earlier, kind) if _row_key(row) in keys)])
        until = changed_until(old.intervals, old.extensions, fresh.intervals, fresh.extensions)
        if until is not None:  # nothing before the first new event moves
            batch.changed.append((key[0], new[0][0], until))
    return [
        *sql.for_each_key(INTERVALS, "DELETE FROM usage_intervals", INTERVAL_KEY, sorted(gone["intervals"])),
        *sql.for_each_key(EXTENSIONS, "DELETE FROM usage_extensions", EXTENSION_KEY, sorted(gone["extensions"])),
        *sql.for_each_key(CHUNKS, "DELETE FROM sandbox_history_chunks", ("workspace_id", "sandbox_id", "seq"),
                          gone["chunks"]),
    ]


def _row_key(row: tuple) -> tuple:
    """An interval's INTERVAL_KEY or an extension's EXTENSION_KEY: (workspace, start or time, sandbox)."""
    return row[0], row[4], row[2]


def differing(old: list[tuple], new: list[tuple], key_of) -> tuple[list[tuple], list[tuple]]:  # type: ignore[no-untyped-def]
    """The keys whose rows to delete and the rows to insert so that ``old`` rows become ``new``
    ones.  Rows are deleted by key: a key whose rows differ at all is deleted and written whole."""
    old_by: dict[tuple, list[tuple]] = defaultdict(list)
    new_by: dict[tuple, list[tuple]] = defaultdict(list)
    for row in old:
        old_by[key_of(row)].append(row)
    for row in new:
        new_by[key_of(row)].append(row)
    changed = [k for k in old_by.keys() | new_by.keys() if sorted(old_by.get(k, ())) != sorted(new_by.get(k, ()))]
    return [k for k in changed if k in old_by], [row for k in changed for row in new_by.get(k, ())]


def changed_until(old_intervals: list[tuple], old_extensions: list[tuple], intervals: list[tuple],
                  extensions: list[tuple]) -> int | None:
    """Where a re-derived sandbox's usage stops differing from what it was (None: nowhere).

    Rows are counted, not only compared: a late extension at the same minute, template and
    deployment as a stored one makes a row equal to it (and, with no interval open, no other
    row changes), and its day is billed again."""
    ends = [FOREVER if iv[5] is None else iv[5] for iv in _counts_differ(old_intervals, intervals)]
    ends += [ext[4] + 1 for ext in _counts_differ(old_extensions, extensions)]
    return max(ends, default=None)


def _counts_differ(old: list[tuple], new: list[tuple]) -> Collection[tuple]:
    """The rows that ``old`` and ``new`` hold a different number of."""
    if not old:  # a sandbox's events in order: every row is new, nothing to count
        return new
    before, after = Counter(old), Counter(new)
    return {row for row in before.keys() | after.keys() if before[row] != after[row]}


def ended_days(changed: list[tuple[str, int, int]], horizon: int) -> list[tuple[str, int]]:
    """The (workspace, UTC day) pairs that ``[from, until)`` ranges touch and that ended by
    ``horizon``: usage billing may already have closed (on-time events touch none)."""
    days: set[tuple[str, int]] = set()
    for ws, start, until in changed:
        day = start - start % DAY_US
        while day < until and day + DAY_US <= horizon:
            days.add((ws, day))
            day += DAY_US
    return sorted(days)


# The ingest hook (events.service): grouping and sorting the events needs no database.
USAGE_DERIVATION = Derivation(prepare=lifecycle_events, apply=apply)
