"""Consume lifecycle events from NATS JetStream (CONTRACT §2.1).

One durable pull consumer, shared by every instance: each fetch takes up to ``batch_size``
messages, their events are stored with one call on the same path as an HTTP batch
(events.controller.store_rows, all or nothing, durable when it returns), and only then are
the messages acknowledged.  A crash before the acknowledgements means a redelivery, and a
redelivered event is a duplicate: stored once, billed once.

An invalid event (what HTTP answers with a 4xx) must not hold up the others: it is
republished to the dead-letter subject with its original body and headers and a
``Metering-Problem`` header (the problem details), then acknowledged.  A store that fails
for another reason (the database away) acknowledges nothing: the batch comes again.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field

import nats
import structlog
from litestar.datastructures import State
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from metering.api.metrics import Metrics
from metering.db import Database, create_database
from metering.errors import Conflict, Problem
from metering.events.controller import event_parser, store_rows
from metering.events.service import EventWriter, Row
from metering.logging import configure_logging
from metering.pricing.service import PriceCatalog
from metering.settings import NatsSettings, Settings
from metering.usage.derive import USAGE_DERIVATION
from metering.stream.messages import dead_letter_headers, event_body

log = structlog.get_logger("metering.stream")
RETRY_SECONDS = 2  # after a failed store or a lost connection
PIPELINE = 2  # batches in hand at once: one being written, the next being parsed
TOP_UP_SECONDS = 0.05  # a batch waits this long at most for more messages to fill it


@dataclass
class BatchOutcome:
    stored: int = 0  # acknowledged after the commit (new events and duplicates)
    dead: list[Msg] = field(default_factory=list)


class StreamConsumer:
    """Runs until ``stop`` is set; ``state`` holds what HTTP ingest uses (settings, prices,
    event_writer, metrics)."""

    def __init__(self, state: State, config: NatsSettings) -> None:
        self.state = state
        self.config = config
        self.js: JetStreamContext | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, reconnecting after any failure, until ``stop``."""
        while not stop.is_set():
            try:
                await self._session(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - log it, wait, connect again: never give up
                log.warning("stream consumer failed; retrying", error=repr(exc)[:500])
                await _sleep_unless(stop, RETRY_SECONDS)

    async def _session(self, stop: asyncio.Event) -> None:
        cfg = self.config
        nc = await nats.connect(cfg.url, name="metering", max_reconnect_attempts=-1, reconnect_time_wait=1)
        try:
            self.js = nc.jetstream()
            await ensure_streams(self.js, cfg)
            sub = await self.js.pull_subscribe_bind(durable=cfg.durable, stream=cfg.stream)
            log.info("stream consumer started", stream=cfg.stream, durable=cfg.durable)
            # The next batch is fetched and parsed while the one before is being written.
            in_flight: set[asyncio.Task[BatchOutcome]] = set()
            try:
                while not stop.is_set():
                    if len(in_flight) >= PIPELINE:
                        done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                        for task in done:
                            task.result()
                    msgs = await _fetch_batch(sub, cfg)
                    if msgs:
                        in_flight.add(asyncio.create_task(self.handle(msgs)))
            finally:  # what was fetched is stored and acknowledged (or left to come again)
                await asyncio.gather(*in_flight, return_exceptions=True)
        finally:
            await nc.close()  # what was fetched and not acknowledged is delivered again

    async def handle(self, msgs: list[Msg]) -> BatchOutcome:
        """Store one fetch's events, dead-letter the invalid ones, acknowledge what is done."""
        outcome = BatchOutcome()
        parse = event_parser(self.state)
        rows: list[Row] = []
        valid: list[Msg] = []
        for msg in msgs:
            try:
                rows += parse(event_body(msg.data, msg.headers), batch=False)
            except Problem as exc:
                await self._dead_letter(msg, exc, outcome)
                continue
            valid.append(msg)
        while valid:
            try:
                await store_rows(self.state, rows)
            except Conflict as exc:  # one event reuses a stored key with another body: it alone is out
                index = exc.errors[0]["index"]
                rows.pop(index)
                await self._dead_letter(valid.pop(index), _one_event(exc), outcome)
                continue
            except Exception as exc:  # noqa: BLE001 - nothing stored: everything comes again
                log.warning("stream batch not stored; it will be delivered again", error=repr(exc)[:500])
                for msg in valid:
                    await msg.nak(delay=RETRY_SECONDS)
                await asyncio.sleep(RETRY_SECONDS)
                return outcome
            break
        for msg in valid:  # durably stored: now, and only now, acknowledged
            await msg.ack()
        outcome.stored = len(valid)
        log.debug("stream batch stored", events=len(valid), dead_lettered=len(outcome.dead))
        return outcome

    async def _dead_letter(self, msg: Msg, problem: Problem, outcome: BatchOutcome) -> None:
        assert self.js is not None
        headers = dead_letter_headers(msg.headers, problem, msg.subject)
        # Published to the dead-letter stream (a PubAck: it is kept), then acknowledged.
        await self.js.publish(self.config.dead_letter_subject, msg.data, headers=headers)
        await msg.ack()
        outcome.dead.append(msg)
        self.state.metrics.events_rejected.labels(str(problem.status)).inc()
        log.warning("event dead-lettered", subject=msg.subject, status=problem.status, detail=problem.detail)


async def _fetch_batch(sub: JetStreamContext.PullSubscription, cfg: NatsSettings) -> list[Msg]:
    """Up to ``batch_size`` messages.  A fetch answers with what the server has at hand, often
    a fraction of a batch while a backlog streams in; topping it up while more keeps coming
    makes fewer, bigger transactions (each costs a commit)."""
    try:
        msgs = await sub.fetch(cfg.batch_size, timeout=cfg.fetch_wait_seconds)
    except TimeoutError:  # nothing within fetch_wait_seconds (asyncio's TimeoutError is this one since 3.11)
        return []
    while len(msgs) < cfg.batch_size:
        try:
            msgs += await sub.fetch(cfg.batch_size - len(msgs), timeout=TOP_UP_SECONDS)
        except TimeoutError:
            break
    return msgs


def _one_event(conflict: Conflict) -> Conflict:
    """A batch's 409 about its event ``index``, as the problem of that event alone."""
    errors = [{k: v for k, v in e.items() if k != "index"} | {"index": 0} for e in conflict.errors[:1]]
    return Conflict("an event with this (source, id) was already received with a different body", errors)


async def ensure_streams(js: JetStreamContext, cfg: NatsSettings) -> None:
    """The events stream (made with ``subjects`` if missing), a stream that keeps the dead
    letters (``<stream>_DEAD_LETTER``, unless one already captures that subject), and the
    durable consumer.  Every instance may do this at once: the same configuration twice is
    no error in JetStream."""
    try:
        await js.stream_info(cfg.stream)
    except NotFoundError:
        await js.add_stream(name=cfg.stream, subjects=cfg.subjects)
    try:
        holder = await js.find_stream_name_by_subject(cfg.dead_letter_subject)
    except NotFoundError:
        holder = None
    if holder == cfg.stream:
        raise ValueError(f"dead_letter_subject {cfg.dead_letter_subject!r} is inside stream {cfg.stream}: "
                         "dead letters would be consumed again")
    if holder is None:
        await js.add_stream(name=f"{cfg.stream}_DEAD_LETTER", subjects=[cfg.dead_letter_subject])
    await js.add_consumer(cfg.stream, ConsumerConfig(
        durable_name=cfg.durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=cfg.ack_wait_seconds,
        max_ack_pending=max(20_000, 4 * cfg.batch_size),
    ))


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


def ingest_state(settings: Settings, db: Database, prices: PriceCatalog, metrics: Metrics) -> State:
    """What the consumer needs to store events, outside the HTTP app (``metering consume``)."""
    return State({"settings": settings, "metrics": metrics, "prices": prices, "db": db,
                  "event_writer": EventWriter(db, USAGE_DERIVATION)})


async def run_standalone(settings: Settings) -> int:
    """``metering consume``: the consumer alone, until SIGTERM or SIGINT."""
    assert settings.ingest.nats is not None
    configure_logging(settings.log_level, settings.log_format)
    db = create_database(settings.database_url)
    try:
        prices = PriceCatalog.from_file(settings.pricing_file)
        await prices.refresh(db)
        state = ingest_state(settings, db, prices, Metrics())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await StreamConsumer(state, settings.ingest.nats).run(stop)
        return 0
    finally:
        await db.dispose()
