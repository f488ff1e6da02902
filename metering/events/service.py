"""Validate a batch of CloudEvents and store it, all or nothing, exactly once per key.

The hot path, per batch: the body decoded in C into typed structs (twice: validated, and as
sent for the canonical payload), a light rule check per event, then bulk driver SQL
(db.upsert.BulkSQL).  Messages are only built when something is wrong: then the batch is
checked again as dicts, event by event, to name every bad event's index and field.

Writes go through ``EventWriter``: requests that arrive while a transaction is being written
are committed together in the next one (on SQLite the big ones inserted as they come,
``STAGE_EVENTS``).  Usage derivation must not fold a sandbox from two transactions at once:
SQLite has one writer anyway, and on PostgreSQL the derivations take a lock
(``write_group``), while the events of the next transaction go in beside them.  Repeats
inside a request are found on the event loop first (a 409 needs no database); the
derivation's grouping is made once per transaction, for all of its requests' rows
(``write_group``, ``commit_staged``).  On PostgreSQL, whose writer runs on the event loop, a
big request is stored in pieces and derived with passes of the loop (``PIECE_EVENTS``), so
that the loop answers other requests in between: in one piece, a 10,000-event batch held it
for up to a second on a loaded machine.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from functools import partial
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import Connection

from metering.core.timeutil import TIME_RANGE, format_time, in_time_range
from metering.db import Database
from metering.db.statements import KeyTaken, Statements
from metering.db.upsert import BulkSQL
from metering.errors import BadRequest, Conflict, Invalid, PayloadTooLarge, field_error
from metering.events.models import Event
from metering.events.schemas import (
    BODY_HASH,
    EVENT_COLUMNS,
    EVENT_ID,
    SOURCE,
    CloudEvent,
    IngestResult,
    RuleCheck,
    WireEvent,
    check_rules,
    split_msgspec_error,
)

EVENTS = Event.__table__
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_US = datetime.resolution
MAX_REPORTED_ERRORS = 100
ON_KEY_CONFLICT = "ON CONFLICT (source, event_id) DO NOTHING"
# Serializes the derivation of ingest transactions across connections and processes on
# PostgreSQL (SQLite's write lock serializes whole transactions there): two transactions
# must not fold one sandbox at once.  Taken after the events are inserted (write_group).
PG_INGEST_LOCK = 0x6D6574_6572696E  # "meterin"
PG_INGEST_SERIAL = f"SELECT pg_advisory_xact_lock({PG_INGEST_LOCK})"
# The first statement of a PostgreSQL ingest transaction: plans that search indexes.  Every
# row the transaction reads or deletes it finds by key, for the keys the requests carry; but
# the planner counts 100 keys in any JSON array, and while a table is small or not analyzed
# yet, hashing all of it looks cheaper than 100 index searches.  A prepared statement keeps
# that plan as the table grows (every transaction read all of events and sandbox_states,
# until the next autoanalyze).  set_config(..., true): this transaction only.
PG_INGEST_PLANS = "SELECT " + ", ".join(
    f"set_config('{name}', 'off', true)" for name in ("enable_hashjoin", "enable_mergejoin", "enable_seqscan"))
# A group commit holds at most this many events (a request this big goes alone).  A commit's
# cost is mostly the pages it dirties, one per place its rows go in each index, so sharing one
# commit pays more the more requests share it, whatever their size.
MAX_GROUP_EVENTS = 10_000
# A writer in another process is sent the next group before the current one is answered once
# this many events wait: fewer wait for the transaction in progress, to share the next commit.
SEND_AHEAD_EVENTS = 2_000
# Groups sent to a writer process before the first is answered (see EventWriter).
WRITER_DEPTH = 2
# On PostgreSQL, where the next transaction runs beside the one in progress (on the writer's
# other connection), this many waiting requests go at once, whatever their size, and without
# waiting for more to join them.  Clients that all wait in one transaction send their next
# requests together, to be parsed one after the other while the writer idles, and so on for
# ever; sent two at a time, they fall into groups that alternate, one parsed while the other
# is written.  2026-12-03, alternating with the events rule alone: 100-event requests from 8
# clients 14,651 / 13,219 against 10,331 / 12,713 events/s, 10-event 6,633 / 6,034 against
# 5,500 / 5,696, 1,000 x 4 and single events unchanged.  Not on SQLite, whose writer process
# would only queue them behind its commit: each commit fewer requests, each event more pages
# (the writer's CPU per event rose by half at 100 x 8).
SEND_AHEAD_REQUESTS = 2
# On SQLite a request of this many events or more is sent to the writer process as soon as it
# is parsed, and inserted in the open transaction while the next ones are parsed; smaller ones
# go with the commit (EventWriter).
STAGE_EVENTS = 50
# Passes of the event loop an idle writer's next small group waits, so that requests already
# read or on their way join it.  Without them, at 100-event requests from 8 clients, commits
# alternated between 1 request and 7: the first request parsed after a commit's answers went
# alone, while the other clients' next requests were still in the socket buffers.
GATHER_PASSES = 3
# On PostgreSQL the ingest transaction runs on the event loop (db.pg_writer), which answers
# other requests only while it waits for a statement.  A request with more events than this
# is stored in pieces of about this many, each a statement of its own, and derived with a
# pass of the loop after about this many (usage.derive.apply): the Python between two (~10 us
# an event, several times that on a loaded machine) then holds the loop for a few
# milliseconds, not for the whole batch.  A big batch is parsed in pieces of this many
# events too (parse_batch_in_pieces).  Each statement also costs PostgreSQL a fixed part: at
# 1,000-event requests from 4 clients, pieces of 100 ran at 9,000 events/s (74 us of
# PostgreSQL CPU per event), of 300 at 10,500 and of 500 at 10,900 (2026-12-02, a quiet
# machine); /health/live's 95th percentile under a 10,000-event batch went from 5.6 to 8.6
# ms with 300.
PIECE_EVENTS = 300

_canonical = msgspec.json.Encoder(order="sorted")

Row = tuple  # one event, in EVENT_COLUMNS order
TemplateCheck = Callable[[str, int], bool]


class Derivation(NamedTuple):
    """What else an ingest transaction writes about the events it stores (usage.derive).

    ``prepare`` needs no database: the transaction (``write_group``) runs it on all of its
    requests' stored rows at once, before PostgreSQL's lock, so no other transaction waits for
    it; ``apply`` then runs with what it made, and passes the loop (``Statements.pause``) every
    ``PIECE_EVENTS`` events or so.
    """

    prepare: Callable[[list[Row]], Any]
    apply: Callable[[BulkSQL, Any], None]


class Prepared(NamedTuple):
    """One request's rows, ready for the writer."""

    rows: list[Row]  # as parsed
    unique: list[Row]  # repeats inside the request dropped
    indexes: list[int]  # each unique row's index in the request
    staged: bool = False  # sent to the writer process ahead of its commit (EventWriter)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Sent to the SQLite writer's process: the rows as msgpack, which msgspec writes ~14
        # times faster than pickle does (pickle remembers every object it writes), and
        # nothing the writer can make itself.
        repeats = None if self.unique is self.rows else self.indexes
        return _unpack, (_pack_rows(self.rows), repeats)


_pack_rows = msgspec.msgpack.Encoder().encode
_unpack_rows = msgspec.msgpack.Decoder(list[tuple]).decode


def _unpack(packed: bytes, indexes: list[int] | None) -> Prepared:
    rows = _unpack_rows(packed)
    if indexes is None:
        return Prepared(rows, rows, list(range(len(rows))))
    return Prepared(rows, [rows[i] for i in indexes], indexes)


def prepare(rows: list[Row]) -> Prepared:
    """Everything about a request's rows that needs no database; 409 for a repeat with another body.

    Their grouping for the derivation waits for the transaction (write_group), which groups
    all of its requests' rows at once: grouped here too, a request in a group was grouped twice.
    """
    unique, indexes = dedupe_batch(rows)
    return Prepared(rows, unique, indexes)


def _to_us(dt: datetime) -> int:
    return (dt - EPOCH) // ONE_US


# -- decoding and validation -------------------------------------------------------------

_decode_batch = msgspec.json.Decoder(list[CloudEvent]).decode
_decode_batch_wire = msgspec.json.Decoder(list[WireEvent]).decode
_decode_one = msgspec.json.Decoder(CloudEvent).decode
_decode_one_wire = msgspec.json.Decoder(WireEvent).decode


def parse_events(
    body: bytes, *, batch: bool, max_events: int, template_known: TemplateCheck, latest_us: int, received_us: int
) -> list[Row]:
    """The body's events as rows ready to insert, or the problem: 400, 413 or 422.

    Fast path: the whole body decoded in C into typed structs (no dicts, nothing for the
    garbage collector), once to validate and once as sent for the canonical payload.  Any
    doubt (invalid JSON, a wrong type, an attribute we do not know, a broken rule) sends the
    body down the dict path, which accepts the same events and names every problem.
    """
    rows = _fast_rows(body, batch, max_events, template_known, latest_us, received_us)
    if rows is not None:
        return rows
    raw = decode_events(body, batch=batch, max_events=max_events)
    return validate_batch(raw, template_known=template_known, latest_us=latest_us, received_us=received_us)


def _fast_rows(
    body: bytes, batch: bool, max_events: int, template_known: TemplateCheck, latest_us: int, received_us: int
) -> list[Row] | None:
    try:
        if batch:
            events, sent = _decode_batch(body), _decode_batch_wire(body)
        else:
            events, sent = [_decode_one(body)], [_decode_one_wire(body)]
    except msgspec.DecodeError:  # ValidationError included
        return None
    if len(events) > max_events:
        return None
    rules = RuleCheck()
    rows = []
    for ev, wire in zip(events, sent):
        time_us = _to_us(ev.time)
        if not _passes(rules, ev, time_us, template_known, latest_us):
            return None
        rows.append(_row(_canonical.encode(wire), ev, time_us, received_us))
    return rows


_decode_raw_batch = msgspec.json.Decoder(list[msgspec.Raw]).decode


async def parse_batch_in_pieces(
    body: bytes, *, max_events: int, template_known: TemplateCheck, latest_us: int, received_us: int
) -> list[Row] | None:
    """``parse_events``' fast path for a big batch, on the event loop, which answers other
    requests between pieces of ``PIECE_EVENTS`` events; None if the body needs the dict path
    (``parse_events``, which names the problems).

    The body is split into its events' JSON by one C pass, and each event decoded on its own:
    the same checks as the batch decoded at once, in steps of a few milliseconds.  (On a
    thread the parse held the GIL, which the loop waited for at every step, for as long as
    the machine's other processes kept the thread from running.)
    """
    try:
        raws = _decode_raw_batch(body)
    except msgspec.DecodeError:
        return None
    if len(raws) > max_events:
        return None
    rules = RuleCheck()
    rows: list[Row] = []
    for lo in range(0, len(raws), PIECE_EVENTS):
        if lo:
            await asyncio.sleep(0)
        for raw in raws[lo:lo + PIECE_EVENTS]:
            try:
                ev, wire = _decode_one(raw), _decode_one_wire(raw)
            except msgspec.DecodeError:  # ValidationError included
                return None
            time_us = _to_us(ev.time)
            if not _passes(rules, ev, time_us, template_known, latest_us):
                return None
            rows.append(_row(_canonical.encode(wire), ev, time_us, received_us))
    return rows


def _passes(rules: RuleCheck, ev: CloudEvent, time_us: int, template_known: TemplateCheck, latest_us: int) -> bool:
    template = ev.data.template
    return (
        rules.passes(ev)
        and time_us <= latest_us
        and in_time_range(time_us)
        and (template is None or template_known(template, time_us))
    )


def decode_events(body: bytes, *, batch: bool, max_events: int) -> list[Any]:
    """The body's events as decoded builtins; 400 for bad JSON or shape, 413 for too many."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if batch:
        if not isinstance(decoded, list):
            raise BadRequest("a batch must be a JSON array of events")
        if len(decoded) > max_events:
            raise PayloadTooLarge(f"a batch holds at most {max_events} events, got {len(decoded)}")
        return decoded
    if not isinstance(decoded, dict):
        raise BadRequest("a single event must be a JSON object; send arrays as application/cloudevents-batch+json")
    return [decoded]


def validate_batch(
    raw_events: Sequence[Any], *, template_known: TemplateCheck, latest_us: int, received_us: int
) -> list[Row]:
    """Decoded events as rows ready to insert, or ``Invalid`` naming every bad event's index and field."""
    try:
        events = msgspec.convert(raw_events, list[CloudEvent])
    except msgspec.ValidationError:
        return _validate_each(raw_events, template_known, latest_us, received_us)
    rules = RuleCheck()
    rows = []
    for raw, ev in zip(raw_events, events):
        time_us = _to_us(ev.time)
        if not _passes(rules, ev, time_us, template_known, latest_us):
            return _validate_each(raw_events, template_known, latest_us, received_us)
        rows.append(_row(_canonical.encode(raw), ev, time_us, received_us))
    return rows


def _row(payload: bytes, ev: CloudEvent, time_us: int, received_us: int) -> Row:
    # ``payload`` is the canonical JSON (sorted keys): the hash does not depend on the sender's key order.
    d = ev.data
    return (ev.source, ev.id, ev.type, time_us, d.workspace_id, d.deployment_id, d.sandbox_id, d.run_id,
            d.template, d.minutes, hashlib.sha256(payload).hexdigest(), payload.decode(), received_us)


def _validate_each(
    raw_events: Sequence[Any], template_known: TemplateCheck, latest_us: int, received_us: int
) -> list[Row]:
    """The slow path: every event on its own, collecting every problem with its index and field."""
    rows: list[Row] = []
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
        elif not in_time_range(time_us):
            problems.append(("time", f"must lie in {TIME_RANGE}"))
        data = ev.data
        if data.template is not None and not problems and not template_known(data.template, time_us):
            problems.append(("data.template", f"unknown template {data.template!r}"))
        if problems:
            errors.extend(field_error(msg, field, index) for field, msg in problems)
            continue
        rows.append(_row(_canonical.encode(raw), ev, time_us, received_us))
    if errors:
        raise Invalid(
            f"{len({e.get('index') for e in errors})} of {len(raw_events)} events are invalid; none was stored",
            errors[:MAX_REPORTED_ERRORS],
        )
    return rows


def dedupe_batch(rows: list[Row]) -> tuple[list[Row], list[int]]:
    """Drop repeats inside the batch; a repeat with another body is a conflict.

    Returns the unique rows and, parallel to them, each row's index in the batch.
    """
    if len({(row[SOURCE], row[EVENT_ID]) for row in rows}) == len(rows):
        return rows, list(range(len(rows)))  # the common case: nothing repeats
    seen: dict[tuple[str, str], int] = {}
    unique: list[Row] = []
    indexes: list[int] = []
    for index, row in enumerate(rows):
        key = (row[SOURCE], row[EVENT_ID])
        first = seen.setdefault(key, len(unique))
        if first == len(unique):
            unique.append(row)
            indexes.append(index)
        elif unique[first][BODY_HASH] != row[BODY_HASH]:
            raise _conflict(index)
    return unique, indexes


def _conflict(index: int) -> Conflict:
    return Conflict(
        "an event with this (source, id) was already received with a different body; none was stored",
        [field_error("(source, id) already used by a different event", "id", index)],
    )


# -- storing -------------------------------------------------------------------------------
# Synchronous: a whole ingest transaction runs in one go on the writer (db.writer.WriteRunner).


def _insert(sql: BulkSQL, unique: list[Row], indexes: list[int] | None) -> int:
    """Insert a request's events, skipping those stored before; how many went in.  409 if one
    of them was stored with another body (``indexes``: each row's index in its request), or
    with ``indexes`` None, ``_StoredBefore`` at the first repeat.  On PostgreSQL in pieces of
    ``PIECE_EVENTS`` events, each a statement of its own, so that the loop answers other
    requests between them (its transaction runs on the event loop, db.pg_writer)."""
    step = PIECE_EVENTS if sql.is_pg else max(1, len(unique))
    # Optimistic on PostgreSQL: a plain insert fails at the first stored key (the caller's
    # savepoint undoes it), where ON CONFLICT pays a speculative insertion per row (an index
    # search before the insert and a second WAL record after it): 2026-12-04, 300-event
    # statements, 11.0-12.5 us of PostgreSQL CPU an event against 14.7-15.3.
    plain = indexes is None and sql.is_pg
    inserted = 0
    for lo in range(0, len(unique), step):
        piece = unique[lo:lo + step]
        try:
            added = (sql.insert_new(EVENTS, EVENT_COLUMNS, piece) if plain
                     else sql.execute_all(sql.insert_chunks(EVENTS, EVENT_COLUMNS, piece, ON_KEY_CONFLICT)))
        except KeyTaken:
            raise _StoredBefore from None
        if added < len(piece):  # some were stored before: repeats, or conflicts?
            if indexes is None:
                raise _StoredBefore
            stored = _stored_hashes(sql, [_key(r) for r in piece])
            for offset, row in enumerate(piece):
                if stored[_key(row)] != row[BODY_HASH]:
                    raise _conflict(indexes[lo + offset])
        inserted += added
    return inserted


def _result(batch: Prepared, inserted: int) -> IngestResult:
    return IngestResult(accepted=inserted, duplicates=len(batch.rows) - inserted)


def _key(row: Row) -> tuple[str, str]:
    return row[SOURCE], row[EVENT_ID]


def _stored_hashes(sql: BulkSQL, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    stored: dict[tuple[str, str], str] = {}
    for stmt, params in sql.keyed_chunks(EVENTS, "SELECT source, event_id, body_hash FROM events",
                                         ("source", "event_id"), keys):
        stored.update(((s, e), h) for s, e, h in sql.rows(stmt, params))
    return stored


class _StoredBefore(Exception):
    """Some event of a group was stored before: each request must learn its own repeats."""


def _insert_together(sql: BulkSQL, batches: list[Prepared]) -> list[IngestResult | Exception] | None:
    """Several requests' events in one set of statements, or None when each request must go
    on its own: two of them share a key, or one repeats an event stored before.

    Optimistic: all the events are inserted at once, in a savepoint.  If fewer rows went in
    than were sent (on PostgreSQL: if the plain insert met a stored key), something repeats
    a stored event: the savepoint is rolled back and the caller inserts each request on its
    own, where its repeats and conflicts are found.
    Nothing is read back in the common case, whatever the group's size.
    """
    owner: dict[tuple[str, str], int] = {}
    for i, batch in enumerate(batches):
        for row in batch.unique:
            if owner.setdefault(_key(row), i) != i:
                return None  # the order between the requests matters: let each go on its own
    try:
        with sql.run.savepoint():
            _insert(sql, [row for batch in batches for row in batch.unique], None)
    except _StoredBefore:
        return None
    return [_result(batch, len(batch.unique)) for batch in batches]


def _insert_each(sql: BulkSQL, batches: list[Prepared]) -> list[IngestResult | Exception]:
    """One request after the other, each in a savepoint: a 409 rolls back only its own events.
    Any other error fails the transaction (on PostgreSQL a deadlock is then run again)."""
    outcomes: list[IngestResult | Exception] = []
    for batch in batches:
        try:
            with sql.run.savepoint():
                outcomes.append(_result(batch, _insert(sql, batch.unique, batch.indexes)))
        except Conflict as exc:  # it is that request's answer
            outcomes.append(exc)
    return outcomes


def write_group(
    conn: Connection | Statements, batches: list[Prepared], derivation: Derivation | None = None
) -> list[IngestResult | Exception]:
    """Store several requests' prepared batches in the current transaction, each all or nothing.

    One outcome per batch.  With a single batch an error is raised (the caller rolls back).
    ``conn``: what the writer gives (db.writer), or a caller's connection in a transaction.

    First every request's events are inserted, then the usage they change is derived.  On
    PostgreSQL only the derivation is serialized (``PG_INGEST_SERIAL``): the inserts of the
    next transaction run beside it, on another connection, and the unique key makes a
    second insert of an event wait for the first one's commit (then it is a duplicate).
    """
    sql = BulkSQL(conn)
    if sql.is_pg:
        sql.run.open(PG_INGEST_PLANS)
    outcomes, shared = _insert_group(sql, batches, alone=len(batches) == 1)
    _derive(sql, batches, outcomes, derivation, shared)
    return outcomes


def _insert_group(sql: BulkSQL, batches: list[Prepared], alone: bool) -> tuple[list[IngestResult | Exception], bool]:
    """Insert the requests' events; their outcomes, and whether two of them may share an event.
    ``alone``: the only request of its transaction, whose 409 is raised (no savepoint needed)."""
    # A lone request needs no savepoint, unless it is big enough on PostgreSQL for the
    # optimistic insert (``_insert``) to save more than the savepoint's two round trips cost.
    if not alone or (sql.is_pg and len(batches[0].unique) >= PIECE_EVENTS):
        together = _insert_together(sql, batches)
        if together is not None:
            return together, False
    if alone:  # its 409 is raised
        only = batches[0]
        return [_result(only, _insert(sql, only.unique, only.indexes))], False
    return _insert_each(sql, batches), True  # one request after the other: they may share events


def stage_request(conn: Connection, batch: Prepared) -> tuple[Prepared, IngestResult | Exception]:
    """A big request's events, inserted in the SQLite writer process's open transaction as
    soon as the request is parsed (EventWriter): the outcome waits there for ``commit_staged``."""
    return batch, _insert_each(BulkSQL(conn), [batch])[0]


def commit_staged(conn: Connection, staged: list[tuple[Prepared, IngestResult | Exception]],
                  plan: list[Prepared | None], derivation: Derivation | None) -> list[IngestResult | Exception]:
    """The end of a transaction sent in stages: the group's requests in order, each either
    staged (None in ``plan``: its result is the next of ``staged``) or small and sent here;
    the small ones' events inserted, then the usage of all of them derived at once.  Their
    outcomes, in the group's order."""
    sql = BulkSQL(conn)
    small = [batch for batch in plan if batch is not None]
    inserted, shared = _insert_group(sql, small, alone=not staged and len(small) == 1) if small else ([], False)
    staged_parts, small_outcomes = iter(staged), iter(inserted)
    group = [next(staged_parts) if batch is None else (batch, next(small_outcomes)) for batch in plan]
    batches = [batch for batch, _ in group]
    outcomes = [outcome for _, outcome in group]
    # A staged request shares an event with one before it only if it counted it a duplicate.
    shared = shared or (len(group) > 1 and any(
        isinstance(outcome, IngestResult) and outcome.accepted < len(batch.unique) for batch, outcome in group))
    _derive(sql, batches, outcomes, derivation, shared)
    return outcomes


def _derive(sql: BulkSQL, batches: list[Prepared], outcomes: list[IngestResult | Exception],
            derivation: Derivation | None, shared: bool) -> None:
    """Derive the usage of the requests that stored events; ``shared``: some may carry the same event."""
    stored = [batch for batch, outcome in zip(batches, outcomes)
              if isinstance(outcome, IngestResult) and outcome.accepted]
    if derivation is None or not stored:
        return
    rows = [row for batch in stored for row in batch.unique]
    if shared:  # a request that repeats another's event (with the same body: checked) carries it too
        rows = list({_key(row): row for row in rows}.values())
    derived = derivation.prepare(rows)  # before the lock: the less the others wait for
    if sql.is_pg:  # not in a savepoint: the lock must last to the commit
        sql.run.count(PG_INGEST_SERIAL, ())
    derivation.apply(sql, derived)


async def store_batch(db: Database, rows: list[Row], *, derivation: Derivation | None = None) -> IngestResult:
    """Insert one batch in its own transaction; commit means durable, so the caller may answer 202."""
    if not rows:
        return IngestResult(accepted=0, duplicates=0)
    batch = prepare(rows)
    async with db.write() as session:  # through the session's connection: no writer thread of its own
        conn = await session.connection()
        outcomes = await conn.run_sync(partial(write_group, batches=[batch], derivation=derivation))
    return outcomes[0]  # type: ignore[return-value]


class EventWriter:
    """Group commit: an ingest transaction carries every request that waits for it.

    With ``synchronous=FULL`` each SQLite commit costs an fsync, and there is one writer at a
    time, so concurrent single-event requests would queue on the lock, each paying its own
    fsync.  Instead they queue here, and the next transaction stores them all under one commit.
    A writer in another process is sent a big next group while it writes the current one
    (``WRITER_DEPTH``): the event loop may be busy decoding a big batch when a transaction
    ends, and the writer should not wait for it to be free.  On PostgreSQL that group's
    transaction starts at once on a second connection, and its inserts overlap the first one's
    derivation and commit.  Small requests wait for the transaction in progress instead, so
    that more of them share the next commit; on PostgreSQL two waiting requests already make a
    group (``SEND_AHEAD_REQUESTS``).

    The SQLite writer process is sent each request of ``STAGE_EVENTS`` or more as soon as it
    is parsed (``stage_request``), with the smaller ones queued before it (events go in in the
    order their requests came): it inserts their events in its open transaction while the
    server parses the next requests.  The group's commit (``commit_staged``) carries the small
    requests that came after, and derives the usage of all of them at once.  A group there is
    the whole queue: a request that would take it past ``MAX_GROUP_EVENTS`` first sends the
    commit of the requests before it.
    """

    def __init__(self, db: Database, derivation: Derivation | None) -> None:
        self.db = db
        self.derivation = derivation
        # The writer process imports this module and the derivation's as it starts.
        modules = [__name__] + ([derivation.apply.__module__] if derivation else [])
        self.runner = db.write_runner(preload=modules)
        self.depth = WRITER_DEPTH if self.runner.overlaps else 1
        self.staged = self.runner.stages
        self._queue: list[tuple[Prepared, asyncio.Future[IngestResult]]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def store(self, rows: list[Row]) -> IngestResult:
        if not rows:
            return IngestResult(accepted=0, duplicates=0)
        batch = prepare(rows)
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        if self.staged:
            if self._queue and self._queued_events() + len(batch.rows) > MAX_GROUP_EVENTS:
                self._send(self._next_group())  # before this request's events go in
            if len(batch.rows) >= STAGE_EVENTS and not self.db.writes:  # and the small ones before it
                self._queue = [(self._stage(queued), f) for queued, f in self._queue]
                batch = self._stage(batch)
        self._queue.append((batch, future))
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    def _stage(self, batch: Prepared) -> Prepared:
        if not batch.staged:
            self.runner.stage(partial(stage_request, batch=batch))
        return batch._replace(staged=True)

    def _queued_events(self) -> int:
        return sum(len(batch.rows) for batch, _ in self._queue)

    def _big_queue(self) -> bool:
        """Worth sending now, ahead of the transaction in progress or without waiting for more
        to join: small requests wait instead, to share the next commit."""
        if self.runner.concurrent and len(self._queue) >= SEND_AHEAD_REQUESTS:
            return True
        return self._queued_events() >= SEND_AHEAD_EVENTS

    def _next_group(self) -> list[tuple[Prepared, asyncio.Future[IngestResult]]]:
        if self.staged:  # the open group is the whole queue: store() cut it at MAX_GROUP_EVENTS
            group, self._queue = self._queue, []
            return group
        size, take = 0, 0
        for batch, _ in self._queue:
            if take and size + len(batch.rows) > MAX_GROUP_EVENTS:
                break
            size += len(batch.rows)
            take += 1
        group, self._queue = self._queue[:take], self._queue[take:]
        return group

    async def _let_arrivals_join(self) -> None:
        """A few passes of the event loop (``GATHER_PASSES``), so that the requests which have
        arrived are parsed and queued: they share the next commit instead of the one after.
        With nothing else to run a pass costs microseconds, which a lone client pays."""
        for _ in range(GATHER_PASSES):
            await asyncio.sleep(0)
            if self._big_queue():
                return

    async def _drain(self) -> None:
        in_flight = self._in_flight
        try:
            while self._queue or in_flight:
                if not in_flight and not self._big_queue():
                    await self._let_arrivals_join()
                while self._queue and len(in_flight) < self.depth and (not in_flight or self._big_queue()):
                    self._send(self._next_group())
                self._wake.clear()  # a new request wakes us if there is room for its group
                woken = asyncio.ensure_future(self._wake.wait())
                done, _ = await asyncio.wait({*in_flight, woken}, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                in_flight -= done
        except BaseException:  # cancelled (shutdown): nobody may wait for ever
            for task in in_flight:
                task.cancel()
            for _, future in self._queue:
                future.cancel()
            self._queue = []
            raise
        finally:
            self._task = None

    def _send(self, group: list[tuple[Prepared, asyncio.Future[IngestResult]]]) -> None:
        """The group's transaction goes to the writer now (in order with the requests staged
        after it), and a task answers its requests."""
        if self.staged:
            plan = [None if batch.staged else batch for batch, _ in group]
            answer = self.runner.commit(partial(commit_staged, plan=plan, derivation=self.derivation),
                                        sum(batch.staged for batch, _ in group))
        else:
            answer = self.runner.run(partial(write_group, batches=[batch for batch, _ in group],
                                             derivation=self.derivation))
        self._in_flight.add(asyncio.create_task(self._answer(group, answer)))

    @staticmethod
    async def _answer(group: list[tuple[Prepared, asyncio.Future[IngestResult]]],
                      answer: Awaitable[list[IngestResult | Exception]]) -> None:
        try:
            outcomes = await answer
        except asyncio.CancelledError:
            for _, future in group:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - the transaction failed: every request in it
            outcomes = [exc] * len(group)
        for (_, future), outcome in zip(group, outcomes):
            if future.done():  # its request was cancelled; its events are stored all the same
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
