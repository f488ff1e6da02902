"""A client that hangs up while the server waits to send it more ends its export at once.

The server's send waits while the client's socket is full (uvicorn's flow control); the
framework then cancels that send, not the export, and leaves the export's generator
suspended where it handed over its last chunk. Unless the response closes it, its reader
goes on holding a read transaction (a pooled connection and a snapshot that keeps
PostgreSQL from vacuuming and SQLite from checkpointing) until the garbage collector finds
the generator: on a quiet server, for as long as it likes. Driven here at the ASGI level,
with the collector off, so that only an explicit close can end it.
"""

import asyncio
import gc
from urllib.parse import urlencode

from metering.api.app import create_app
from metering.exports import service
from tests.exports.bulk import fill_usage
from tests.exports.test_export_memory import open_transactions

TEN_YEARS = {"start": "2020-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"}


async def test_a_client_that_hangs_up_while_the_server_waits_to_send_ends_the_export(settings, admin, db, db_url):
    await fill_usage(db, 20_000, 0)  # several chunks: the reader is one ahead when the send stalls
    stalled, forever = asyncio.Event(), asyncio.Event()
    sent = []

    async def receive():
        if not sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        await stalled.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and len(sent) == 3:  # the header row went; rows next
            stalled.set()
            await forever.wait()  # the client's socket is full: this send waits

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/v1/exports/usage", "raw_path": b"/v1/exports/usage",
             "root_path": "", "query_string": urlencode(TEN_YEARS).encode(),
             "headers": [(b"authorization", admin["Authorization"].encode()), (b"host", b"test")],
             "client": ("127.0.0.1", 50000), "server": ("test", 80)}
    app = create_app(settings)
    gc.disable()
    try:
        async with app.lifespan():  # on this event loop, as the server runs it
            await asyncio.wait_for(app(scope, receive, send), 10)
            assert sent[0]["status"] == 200 and stalled.is_set()
            for _ in range(50):  # the reader's task ends its transaction as it is cancelled
                if not service._producers and not await open_transactions(db, db_url):
                    break
                await asyncio.sleep(0.1)
            assert not service._producers
            assert await open_transactions(db, db_url) == []
    finally:
        gc.enable()
