"""The HTTP server: uvicorn with limits that hold against slow and stuck clients.

uvicorn closes idle keep-alive connections but puts no limit on how long a client may
take to send a request, so a slowloris client (headers a byte at a time) could hold a
connection for ever.  ``GuardedHttpTools`` gives every request a deadline for arriving
in full: a new connection must start its request within ``first_byte_timeout`` and
finish sending it within ``read_timeout``, or it gets a 408 and is closed.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from metering.api.problems import PROBLEM_JSON, problem_body
from metering.settings import Settings


def _timeout_response() -> bytes:
    body = problem_body(408, "the request did not arrive in time")
    head = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: " + PROBLEM_JSON.encode() + b"\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n")
    return head + body


# After a 408, how long what the client still sends is read and dropped before the close.
LINGER_SECONDS = 2


class GuardedHttpTools(HttpToolsProtocol):
    first_byte_timeout = 10  # seconds
    read_timeout = 30

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._lingering = False
        self._arm(self.first_byte_timeout)

    def data_received(self, data: bytes) -> None:
        if not self._lingering:  # after a 408 the rest is dropped unread
            super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.read_timeout)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: int) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # an answer is on its way: cut it
            return
        self.transport.write(_timeout_response())
        if self.cycle is not None:  # the app waiting for the rest of the body: it will not come
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        # Half-close, then close a little later: closed at once, with the client still
        # sending, the socket would answer its next bytes with a reset, and a reset can
        # throw the 408 away before the client has read it.
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


def guarded_protocol(settings: Settings) -> type[GuardedHttpTools]:
    return type("ConfiguredGuardedHttpTools", (GuardedHttpTools,), {
        "first_byte_timeout": settings.header_timeout_seconds,
        "read_timeout": settings.request_timeout_seconds,
    })


def freeze_startup_objects() -> None:
    """Keep what the imports made out of every later garbage collection.

    The libraries loaded at startup (web3, pyarrow, Litestar, SQLAlchemy) leave ~160,000
    objects that live as long as the process, and a full collection walked them all: 85 ms
    here, during which no request was answered.  Frozen, a full collection costs what the
    objects made since startup cost.
    """
    gc.collect()
    gc.freeze()


# Work moved off the event loop (big batches, the depth scan, usage pricing) runs on threads
# that hold the GIL for up to this long before the loop may take it back: at the default 5 ms,
# a request to the loop waits that long at each of its handoffs.
GIL_SWITCH_SECONDS = 0.001


def serve(app: Any, settings: Settings, host: str, port: int) -> None:
    freeze_startup_objects()
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=guarded_protocol(settings),
        log_config=None,
        access_log=False,
        timeout_keep_alive=5,  # idle keep-alive connections are closed quickly
        timeout_graceful_shutdown=10,
        limit_concurrency=1000,  # past this, new connections get a 503 rather than exhausting memory
        h11_max_incomplete_event_size=64 * 1024,
        server_header=False,
    )
