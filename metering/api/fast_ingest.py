"""``POST /v1/events`` served without the framework on its way when it can only succeed.

At a thousand single-event requests a second the server's CPU, not the database, set the
latency, and Litestar's share of each request (routing, the guard, which copies its handler
on every call, parameter and response machinery) was larger than the ingest itself.  This
ASGI layer sits in front of Litestar's router and answers the request itself when it has a
bearer token with ``events:write``, a known content type (or CloudEvents binary mode), a body within the limit, events
that parse and a store that succeeds.  Anything else goes, body and all, to the Litestar
route (events.controller), which stays the one definition of every error answer and of the
OpenAPI operation: no error is answered here.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import structlog
from litestar import Litestar
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from metering.api.auth import principal_for
from metering.api.middleware import record, request_id
from metering.api.problems import send_json
from metering.events.binary import is_binary, structured_event
from metering.events.controller import BATCH_TYPE, SINGLE_TYPES, ingest_body, media_type

PATH = "/v1/events"
SCOPE = "events:write"
_encode = msgspec.json.Encoder().encode


def with_fast_ingest(app: Litestar) -> None:
    """Put the fast path in front of ``app``'s router (after Litestar's own entry, which sets
    up the scope and the ``before_send`` hooks)."""
    app.asgi_handler = FastIngest(app, app.asgi_handler)


class FastIngest:
    def __init__(self, app: Litestar, fallback: ASGIApp) -> None:
        self.app = app
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH or scope["query_string"]:
            await self.fallback(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        limit = self.app.state.settings.max_body_bytes
        body, more = await _read_body(receive, limit)
        rid = request_id(headers)
        with structlog.contextvars.bound_contextvars(request_id=rid):
            whole = not more and len(body) <= limit
            result = await self._ingest(headers, body) if whole else None
            if result is None:  # the Litestar route answers, from the same body
                await self.fallback(scope, _replay(body, more, receive), send)
                return
            await send_json(send, 202, _encode(result), headers=[(b"x-request-id", rid.encode())])
            record(self.app.state.metrics, scope, PATH, 202, started)

    async def _ingest(self, headers: dict[bytes, bytes], body: bytes) -> Any:
        state = self.app.state
        kind = media_type(headers.get(b"content-type", b"").decode("latin-1"))
        binary = is_binary(kind, b"ce-specversion" in headers)
        if not binary and kind not in SINGLE_TYPES and kind != BATCH_TYPE:
            return None
        principal = await principal_for(state, headers.get(b"authorization", b"").decode("latin-1"))
        if principal is None or not principal.allows(SCOPE):
            return None
        try:
            if binary:  # CloudEvents binary mode: the structured event it stands for
                latin = ((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers.items())
                body = structured_event(latin, body, percent_encoded=True)
            return await ingest_body(state, principal, body, kind == BATCH_TYPE)
        except Exception:  # noqa: BLE001 - the Litestar route answers it (again), as it would have
            return None


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """What was read of the body, and whether more is to come (as ``more_body`` says):
    reading stops once past ``limit`` bytes, or when the client is gone."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), True  # gone: the next receive() says so again
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
        if size > limit or not more:
            return b"".join(chunks), more


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """``receive`` as if nothing had been read: what was read comes first, then the rest."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": more}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
