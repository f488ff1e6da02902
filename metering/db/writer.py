"""The ingest writer: whole write transactions, in the order they are asked for, off the event loop.

On a SQLite file each transaction runs in the writer's own process (db.write_process: why
a process, and its protocol), one after the other, started with the runner and started
again if it dies.  On PostgreSQL, whose work is in the server's process, it runs here on
connections of the writer's own, two at a time (db.pg_writer); on an in-memory SQLite, on
the async engine through SQLAlchemy's greenlet bridge.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from metering.db.pg_writer import PgWriter
from metering.errors import Unavailable
from metering.logging import get_logger

T = TypeVar("T")
log = get_logger(__name__)
STOP_SECONDS = 30  # how long a stopping writer may take to finish its transaction
HEADER = struct.Struct(">Q")  # a frame: its length, then a pickle
# What the writer process does with a request (db.write_process), the byte before its pickle:
# so that it knows whether to answer even when the pickle cannot be read.
RUN, STAGE, COMMIT = b"R", b"S", b"C"
# Our end's send buffer (the kernel caps it at twice net.core.wmem_max).  A 10,000-event
# request is ~5 MB: left in the event loop's transport, it went to the writer one default
# buffer (~200 KB) per pass of the loop, which is busy parsing the next request, so a writer
# done with the transaction before waited tens of milliseconds for the rest.  2026-12-04,
# alternating, 10,000-event requests from 2 clients: +2% to +11% events/s.
SEND_BUFFER_BYTES = 16 << 20


def frame(value: Any, kind: bytes = b"") -> bytes:
    data = kind + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


class WriteRunner:
    """``await run(fn)``: ``fn(connection)`` in one write transaction; its result, or its error.

    ``connection``: a SQLAlchemy ``Connection``, or on PostgreSQL a ``PgTransaction``; both
    run driver SQL through db.statements.

    ``preload``: modules the writer process imports as it starts (those of the functions it
    will be sent).  Several calls may be in flight at once: the writer process takes them in
    order, so the next one is there the moment a transaction ends.

    The writer process also takes a transaction in parts (``stages``): ``stage(fn)`` runs
    ``fn(connection)`` in its open transaction, beginning one if none is, and answers nothing;
    ``commit(fn, parts)`` runs ``fn(connection, results)`` with the results of the ``parts``
    stages sent since the last commit, commits, and answers.  Everything is sent in the order
    of the calls, which are synchronous up to the answer: a stage called after a commit goes
    into the next transaction.
    """

    def __init__(self, engine: AsyncEngine, preload: Sequence[str] = ()) -> None:
        self.engine = engine
        url = engine.url
        on_file = engine.dialect.name == "sqlite" and url.database not in (None, "", ":memory:")
        self._path = os.path.abspath(url.database) if on_file else None
        self._preload = tuple(preload)
        self._pg = PgWriter(engine) if engine.dialect.name == "postgresql" else None
        self._outbox: deque[tuple[bytes, asyncio.Future[tuple[bool, Any]] | None]] = deque()
        self._sender: asyncio.Task[None] | None = None
        self._conn: _Connection | None = None
        self._spawned = self._spawn() if self._path is not None else None  # started with the service

    @property
    def in_process(self) -> bool:
        """Whether functions run in this process (False: they are pickled to the writer's)."""
        return self._path is None

    @property
    def overlaps(self) -> bool:
        """Whether a transaction sent before the last one is answered gets under way at once
        (the writer process queues it; PostgreSQL starts it on another connection), rather
        than only waiting for a lock here."""
        return self._path is not None or self._pg is not None

    @property
    def concurrent(self) -> bool:
        """Whether transactions run at the same time (PostgreSQL: one on each of the writer's
        connections), not one after the other (the SQLite writer process)."""
        return self._pg is not None

    @property
    def stages(self) -> bool:
        """Whether a transaction can be sent in parts (``stage``, ``commit``): the writer process."""
        return self._path is not None

    @property
    def pid(self) -> int | None:
        """The writer process's id (None on PostgreSQL)."""
        proc = self._conn.proc if self._conn is not None else self._spawned[0] if self._spawned else None
        return proc.pid if proc is not None else None

    def _spawn(self) -> tuple[subprocess.Popen[bytes], socket.socket]:
        assert self._path is not None
        ours, theirs = socket.socketpair()
        try:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except OSError:  # Linux caps it quietly; elsewhere a refusal leaves the default, which works
            pass
        with theirs:
            proc = subprocess.Popen(
                [sys.executable, "-m", "metering.db.write_process", str(theirs.fileno()), self._path, *self._preload],
                pass_fds=[theirs.fileno()],
            )
        return proc, ours

    async def _connection(self) -> _Connection:
        if self._conn is not None and self._conn.alive:
            return self._conn
        if self._conn is not None:  # it died between transactions: nobody waits for it
            log.warning("ingest_writer_restart", pid=self._conn.proc.pid, returncode=self._conn.proc.poll())
            self._conn.close()
        proc, sock = self._spawned or self._spawn()
        self._spawned = None
        self._conn = _Connection(proc, *await asyncio.open_connection(sock=sock))
        return self._conn

    async def run(self, fn: Callable[[Any], T]) -> T:
        if self._pg is not None:
            return await self._pg.run(fn)
        if self._path is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn)
        # A function that cannot be pickled fails here, before anything is sent.
        return await _answer(self._post(frame(fn, RUN), answered=True))

    def stage(self, fn: Callable[[Any], Any]) -> None:
        """Send ``fn`` to run in the writer process's open transaction (``stages``); no answer."""
        self._post(frame(fn, STAGE), answered=False)

    def commit(self, fn: Callable[[Any, list[Any]], T], parts: int) -> Awaitable[T]:
        """Send the end of the open transaction (``stages``) now; await the result for its answer.
        ``parts``: how many stages it ends.  If the writer lost some (it died between them), the
        transaction fails with ``Unavailable`` and nothing of it is stored."""
        return _answer(self._post(frame((fn, parts), COMMIT), answered=True))

    def _post(self, request: bytes, answered: bool) -> asyncio.Future[tuple[bool, Any]] | None:
        answer = asyncio.get_running_loop().create_future() if answered else None
        conn = self._conn
        if not self._outbox and conn is not None and conn.alive:
            conn.send(request, answer)  # the socket's buffer takes it, or the transport's
            return answer
        self._outbox.append((request, answer))  # once the writer process is there
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())
        return answer

    async def _send(self) -> None:
        """What was posted while there was no writer process: sent in order once one is there."""
        while self._outbox:
            try:
                conn = await self._connection()
            except Exception as exc:  # noqa: BLE001 - could not start it: every request waiting hears why
                for _, answer in self._outbox:
                    if answer is not None and not answer.done():
                        answer.set_exception(exc)
                self._outbox.clear()
                return
            while self._outbox:
                conn.send(*self._outbox.popleft())

    async def close(self) -> None:
        """Stop the writer process: it finishes the transaction in progress, then exits."""
        if self._pg is not None:
            await self._pg.close()
        if self._sender is not None:  # what was posted goes out first
            await asyncio.gather(self._sender, return_exceptions=True)
        conn, self._conn = self._conn, None
        spawned, self._spawned = self._spawned, None
        if conn is not None:
            conn.close()
            proc = conn.proc
        elif spawned is not None:
            proc = spawned[0]
            spawned[1].close()
        else:
            return
        try:
            await asyncio.to_thread(proc.wait, STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


async def _answer(answer: asyncio.Future[tuple[bool, Any]] | None) -> Any:
    assert answer is not None
    ok, value = await answer
    if ok:
        return value
    raise value


class _Connection:
    """One writer process and our end of its socket: answers come back in the order sent."""

    def __init__(self, proc: subprocess.Popen[bytes], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.proc, self.reader, self.writer = proc, reader, writer
        self.pending: deque[asyncio.Future[tuple[bool, Any]]] = deque()
        self.closing = False
        self.answers = asyncio.create_task(self._read_answers())

    @property
    def alive(self) -> bool:
        return not self.answers.done() and self.proc.poll() is None

    def send(self, request: bytes, answer: asyncio.Future[tuple[bool, Any]] | None) -> None:
        if answer is not None:
            self.pending.append(answer)
        self.writer.write(request)

    async def _read_answers(self) -> None:
        try:
            while True:
                (size,) = HEADER.unpack(await self.reader.readexactly(HEADER.size))
                answer = pickle.loads(await self.reader.readexactly(size))
                waiting = self.pending.popleft()
                if not waiting.done():  # else its caller was cancelled: the answer goes nowhere
                    waiting.set_result(answer)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if not self.closing:
                log.warning("ingest_writer_stopped", error=repr(exc), pid=self.proc.pid, in_flight=len(self.pending))
        finally:  # nothing more will be answered
            for waiting in self.pending:
                if not waiting.done():
                    waiting.set_exception(Unavailable(
                        "the ingest writer stopped while storing this request; it was not acknowledged, "
                        "send it again (events stored already count as duplicates)"))
            self.pending.clear()

    def close(self) -> None:
        """Close our end: the writer finishes what it was sent, then exits."""
        self.closing = True
        self.writer.close()
