"""Request id, access log and latency metrics for every HTTP request."""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Mapping

import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from metering.api.metrics import Metrics
from metering.api.problems import send_problem
from metering.logging import get_logger

REQUEST_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
# Recorded for a request whose client went away (or was cut off as too slow, with a 408 from
# the server's guard) before the answer: nginx's "client closed request".  Whatever the app
# then tried to answer never left, and is not a 5xx of the service.
CLIENT_GONE = 499
log = get_logger("metering.access")
# Request ids: a random prefix per process and a counter, unique across instances without
# a call to the OS's random source on every request.
_PREFIX = secrets.token_hex(8)
_COUNTER = itertools.count(1)


def request_id(headers: Mapping[bytes, bytes]) -> str:
    """The caller's ``X-Request-ID`` when it is a safe id, a new one otherwise."""
    given = headers.get(b"x-request-id", b"").decode("latin-1")
    return given if REQUEST_ID.fullmatch(given) else f"{_PREFIX}{next(_COUNTER):016x}"


def record(metrics: Metrics, scope: Scope, route: str, status: int, started: float) -> None:
    """The request's latency metric and its access-log line."""
    elapsed = time.perf_counter() - started
    metrics.requests.labels(scope["method"], route, str(status)).observe(elapsed)
    # The query string is left out: only paths and ids are logged, never secrets.
    log.info("request", method=scope["method"], path=scope["path"], status=status,
             duration_ms=round(elapsed * 1000, 3))


def request_id_middleware(metrics: Metrics):  # type: ignore[no-untyped-def]
    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            rid = request_id(dict(scope["headers"]))
            status = 500
            started = time.perf_counter()
            gone = False

            async def receive_noting_disconnect() -> Message:
                nonlocal gone
                message = await receive()
                gone = gone or message["type"] == "http.disconnect"
                return message

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = CLIENT_GONE if gone else message["status"]
                    message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
                await send(message)

            with structlog.contextvars.bound_contextvars(request_id=rid):
                try:
                    if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
                        # No id or parameter of this API holds one, and PostgreSQL text cannot.
                        await send_problem(send_with_id, 400, "the URL holds a NUL character (%00)")
                    else:
                        await app(scope, receive_noting_disconnect, send_with_id)
                finally:
                    # The route as declared ("/v1/invoices/{invoice_id}"): one label however many ids.
                    record(metrics, scope, scope.get("path_template", "unmatched"), status, started)

        return middleware

    return factory
