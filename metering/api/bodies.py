"""The one gate every request body passes before anything decodes it.

In front of everything else (the fast ingest path, Litestar and its routes), for every
request that carries a body:

- ``Content-Encoding``: ``gzip`` on ``POST /v1/events`` is decoded here, the size limit
  applying to what it decodes to (a compression bomb is 413, whatever its compressed size);
  any other encoding, anywhere, is 415;
- size: over ``max_body_bytes``, by ``Content-Length`` or as it arrives (chunked), is 413;
- content type: a body for the JSON API (``/v1/...``) must be JSON (``application/json`` or
  ``+json``), else 415;
- depth: JSON nested deeper than ``MAX_DEPTH`` is 400, found by a scanner that never recurses
  (core.jsondepth), so no recursive decoder ever sees such a body.

What passes goes on as one message with the decoded body, so the routes behind need no
checks of their own for these.
"""

from __future__ import annotations

import asyncio
import time
import zlib

import structlog

from litestar import Litestar
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from metering.api.middleware import record, request_id
from metering.api.problems import PROBLEM_JSON, problem_body, send_json
from metering.core.jsondepth import MAX_DEPTH, nests_deeper_than

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
GZIP_PATHS = frozenset({"/v1/events"})
API_PREFIX = "/v1/"
ROUTE_LABEL = "body-gate"  # the metrics' route label of the answers given here, whatever the path
# Above this a body is scanned on a thread: the event loop goes on answering meanwhile.
SCAN_ON_THREAD_BYTES = 256 * 1024


class Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def with_body_gate(app: Litestar) -> None:
    """Put the gate in front of whatever answers ``app``'s requests (the fast path included)."""
    app.asgi_handler = BodyGate(app, app.asgi_handler)


def is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


class BodyGate:
    def __init__(self, app: Litestar, inner: ASGIApp) -> None:
        self.app = app
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.inner(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            body, headers, gone = await self._admit(scope, receive)
        except Refused as refused:
            # Answered before the app's middleware: its request id, metric and access-log line here.
            rid = request_id(dict(scope["headers"]))
            with structlog.contextvars.bound_contextvars(request_id=rid):
                await send_json(send, refused.status, problem_body(refused.status, refused.detail), PROBLEM_JSON,
                                headers=[(b"x-request-id", rid.encode())])
                record(self.app.state.metrics, scope, ROUTE_LABEL, refused.status, started)
            return
        # The client that left mid-body: the app sees what came, then the disconnect, as before.
        pending: list[Message] = [{"type": "http.request", "body": body, "more_body": gone}]
        if gone:
            pending.append({"type": "http.disconnect"})

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        await self.inner({**scope, "headers": headers}, replay, send)

    async def _admit(self, scope: Scope, receive: Receive) -> tuple[bytes, list[tuple[bytes, bytes]], bool]:
        limit: int = self.app.state.settings.max_body_bytes
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")]
        named = {k: v.decode("latin-1") for k, v in scope["headers"]}
        encoding = named.get(b"content-encoding", "").strip().lower()
        gzip = encoding == "gzip"
        if encoding not in ("", "identity") and not (gzip and scope["path"] in GZIP_PATHS):
            where = ", ".join(sorted(GZIP_PATHS))
            raise Refused(415, f"Content-Encoding {encoding!r} is not accepted (gzip is, on POST {where})")
        declared = named.get(b"content-length", "")
        if declared.isdigit() and int(declared) > limit and not gzip:
            raise Refused(413, too_large(limit))
        body, gone = await _read(receive, limit)
        if gone:  # nothing will be answered: no checks
            return body, headers, gone
        if gzip:
            body = _gunzip(body, limit)
        content_type = named.get(b"content-type", "")
        if scope["path"].startswith(API_PREFIX) and (body or content_type) and not is_json(content_type):
            raise Refused(415, f"Content-Type must be application/json, not {content_type or 'absent'!r}")
        too_deep = (await asyncio.to_thread(nests_deeper_than, body, MAX_DEPTH) if len(body) > SCAN_ON_THREAD_BYTES
                    else nests_deeper_than(body, MAX_DEPTH))
        if too_deep:
            raise Refused(400, f"the body nests deeper than {MAX_DEPTH} levels")
        headers.append((b"content-length", str(len(body)).encode()))
        return body, headers, gone


def too_large(limit: int) -> str:
    return f"the body is over {limit} bytes"


async def _read(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The whole body (413 past ``limit``), and whether the client went away before its end."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Refused(413, too_large(limit))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _gunzip(body: bytes, limit: int) -> bytes:
    """One gzip member, decoded to at most ``limit`` bytes: 413 past it, 400 if it is not gzip."""
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error:
        raise Refused(400, "the body is not valid gzip") from None
    if len(out) > limit:
        raise Refused(413, too_large(limit) + " once decompressed")
    if not decoder.eof or decoder.unused_data:
        raise Refused(400, "the body is not one complete gzip stream")
    return out
