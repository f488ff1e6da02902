from __future__ import annotations

import asyncio
from functools import partial

from litestar import Controller, Request, post
from litestar.datastructures import State

from metering.api.auth import require_scope
from metering.db.base import now_us
from metering.errors import Forbidden, PayloadTooLarge, Problem, UnsupportedMediaType, field_error
from metering.events.binary import SPECVERSION_HEADER, is_binary, structured_event
from metering.events.openapi import IngestOperation
from metering.events.schemas import EVENT_COLUMNS, IngestResult
from metering.events.service import Row, parse_batch_in_pieces, parse_events
from metering.tokens.service import Principal

SINGLE_TYPES = ("application/cloudevents+json", "application/json")
BATCH_TYPE = "application/cloudevents-batch+json"
WORKSPACE = EVENT_COLUMNS.index("workspace_id")
PARSE_BIG_BYTES = 256 * 1024  # ~500 events


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


class EventController(Controller):
    path = "/v1/events"
    tags = ["events"]
    guards = [require_scope]
    opt = {"scope": "events:write"}

    @post(
        operation_id="ingestEvents",
        status_code=202,
        operation_class=IngestOperation,
        summary="Ingest one CloudEvent or a batch",
        description=(
            "One event as application/cloudevents+json or application/json, or a batch of up to "
            "10,000 as application/cloudevents-batch+json. All or nothing; 202 once durable. "
            "Binary content mode too: attributes in ce-* headers, data as an application/json body."
        ),
    )
    async def ingest(self, request: Request) -> IngestResult:
        state = request.app.state
        try:
            body, batch = await read_body(request)
            return await ingest_body(state, request.state.principal, body, batch)
        except Problem as exc:
            state.metrics.events_rejected.labels(str(exc.status)).inc()
            raise


async def ingest_body(state: State, principal: Principal, body: bytes, batch: bool) -> IngestResult:
    """Parse, check and store one request's events (api.fast_ingest serves the same call)."""
    parser = event_parser(state)
    parse = partial(parser, body, batch=batch)
    if len(body) <= PARSE_BIG_BYTES:
        rows = parse()
    else:
        # A big batch takes tens of milliseconds to parse: in pieces, the event loop goes on
        # answering requests and reading bodies meanwhile.  A body with a problem (the dict
        # path, which names them all) or a big single event: on a thread.
        valid = await parse_batch_in_pieces(body, **parser.keywords) if batch else None
        rows = valid if valid is not None else await asyncio.to_thread(parse)
    ensure_own_workspace(principal, rows)
    return await store_rows(state, rows)


def event_parser(state: State) -> partial[list[Row]]:
    """``parse_events`` with this service's limits, received now: ``parser(body, batch=...)``
    (``parser.keywords``: the limits, for ``parse_batch_in_pieces``)."""
    now = now_us()
    return partial(
        parse_events,
        max_events=state.settings.max_batch_events,
        template_known=state.prices.knows,
        latest_us=now + state.settings.max_future_seconds * 1_000_000,
        received_us=now,
    )


async def store_rows(state: State, rows: list[Row]) -> IngestResult:
    """The one way in for a batch of valid events, from HTTP or from the stream (metering.stream):
    all or nothing, durable when it returns."""
    result = await state.event_writer.store(rows)
    state.metrics.events_accepted.inc(result.accepted)
    state.metrics.events_duplicate.inc(result.duplicates)
    return result


def ensure_own_workspace(principal: Principal, rows: list[Row]) -> None:
    """A token bound to a workspace writes events for that workspace only."""
    if principal.workspace_id is None:
        return
    foreign = [i for i, row in enumerate(rows) if row[WORKSPACE] != principal.workspace_id]
    if foreign:
        raise Forbidden(
            f"this token may only send events for workspace {principal.workspace_id!r}; none was stored",
            [field_error("is not the token's workspace", "data.workspace_id", i) for i in foreign[:100]],
        )


async def read_body(request: Request) -> tuple[bytes, bool]:
    """Content type and size checks; the body, and whether it is a batch."""
    settings = request.app.state.settings
    kind = media_type(request.headers.get("content-type", ""))
    binary = is_binary(kind, SPECVERSION_HEADER in request.headers)
    if not binary and kind not in SINGLE_TYPES and kind != BATCH_TYPE:
        raise UnsupportedMediaType(
            f"Content-Type must be {', '.join(SINGLE_TYPES)} (one event) or {BATCH_TYPE} (a batch)"
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise PayloadTooLarge(f"the body is over {settings.max_body_bytes} bytes")
    body = await request.body()
    if len(body) > settings.max_body_bytes:
        raise PayloadTooLarge(f"the body is over {settings.max_body_bytes} bytes")
    if binary:
        return structured_event(request.headers.items(), body, percent_encoded=True), False
    return body, kind == BATCH_TYPE
