from __future__ import annotations

import msgspec
from litestar import Controller, Request, post

from metering.api.auth import require_scope
from metering.db.base import now_us
from metering.errors import BadRequest, PayloadTooLarge, Problem, UnsupportedMediaType
from metering.events.schemas import IngestResult
from metering.events.service import store_batch, validate_batch

SINGLE_TYPES = ("application/cloudevents+json", "application/json")
BATCH_TYPE = "application/cloudevents-batch+json"


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class EventController(Controller):
    path = "/v1/events"
    tags = ["events"]
    guards = [require_scope]
    opt = {"scope": "events:write"}

    @post(
        operation_id="ingestEvents",
        status_code=202,
        summary="Ingest one CloudEvent or a batch",
        description=(
            "One event as application/cloudevents+json or application/json, or a batch of up to "
            "10,000 as application/cloudevents-batch+json. All or nothing; 202 once durable."
        ),
    )
    async def ingest(self, request: Request) -> IngestResult:
        state = request.app.state
        metrics = state.metrics
        try:
            raw = await read_events(request)
            now = now_us()
            rows = validate_batch(
                raw,
                template_known=state.prices.knows,
                latest_us=now + state.settings.max_future_seconds * 1_000_000,
                received_us=now,
            )
            result = await store_batch(state.db, rows, after_insert=state.after_insert)
        except Problem as exc:
            metrics.events_rejected.labels(str(exc.status)).inc()
            raise
        metrics.events_accepted.inc(result.accepted)
        metrics.events_duplicate.inc(result.duplicates)
        return result


async def read_events(request: Request) -> list:
    """Content type, size and JSON shape checks; the events as decoded builtins."""
    settings = request.app.state.settings
    kind = media_type(request)
    if kind not in SINGLE_TYPES and kind != BATCH_TYPE:
        raise UnsupportedMediaType(
            f"Content-Type must be {', '.join(SINGLE_TYPES)} (one event) or {BATCH_TYPE} (a batch)"
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise PayloadTooLarge(f"the body is over {settings.max_body_bytes} bytes")
    body = await request.body()
    if len(body) > settings.max_body_bytes:
        raise PayloadTooLarge(f"the body is over {settings.max_body_bytes} bytes")
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if kind == BATCH_TYPE:
        if not isinstance(decoded, list):
            raise BadRequest("a batch must be a JSON array of events")
        if len(decoded) > settings.max_batch_events:
            raise PayloadTooLarge(f"a batch holds at most {settings.max_batch_events} events, got {len(decoded)}")
        return decoded
    if not isinstance(decoded, dict):
        raise BadRequest(f"a single event must be a JSON object; send arrays as {BATCH_TYPE}")
    return [decoded]
