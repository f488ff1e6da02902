"""The ingest writer: whole write transactions, one at a time, off the event loop.

On a SQLite file each transaction runs in the writer's own process (db.write_process: why
a process, and its protocol), started with the runner and started again if it dies.
Otherwise (PostgreSQL, an in-memory SQLite) it runs on the async engine, through
SQLAlchemy's greenlet bridge: the database's work is in the database server's process there.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from metering.errors import Unavailable
from metering.logging import get_logger

T = TypeVar("T")
log = get_logger(__name__)
STOP_SECONDS = 30  # how long a stopping writer may take to finish its transaction
HEADER = struct.Struct(">Q")  # a frame: its length, then a pickle


def frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


class WriteRunner:
    """``await run(fn)``: ``fn(connection)`` in one write transaction; its result, or its error.

    ``preload``: modules the writer process imports as it starts (those of the functions it
    will be sent).
    """

    def __init__(self, engine: AsyncEngine, preload: Sequence[str] = ()) -> None:
        self.engine = engine
        url = engine.url
        on_file = engine.dialect.name == "sqlite" and url.database not in (None, "", ":memory:")
        self._path = os.path.abspath(url.database) if on_file else None
        self._preload = tuple(preload)
        self._lock = asyncio.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        if self._path is not None:
            self._start()

    @property
    def in_process(self) -> bool:
        """Whether functions run in this process (False: they are pickled to the writer's)."""
        return self._path is None

    @property
    def pid(self) -> int | None:
        """The writer process's id (None on PostgreSQL)."""
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> None:
        assert self._path is not None
        ours, theirs = socket.socketpair()
        with theirs:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "metering.db.write_process", str(theirs.fileno()), self._path, *self._preload],
                pass_fds=[theirs.fileno()],
            )
        self._sock, self._streams = ours, None

    async def run(self, fn: Callable[[Connection], T]) -> T:
        if self._path is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn)
        async with self._lock:  # one exchange at a time on the socket
            if self._proc is None or self._proc.poll() is not None:
                self._drop("the writer process had stopped")
                self._start()
            if self._streams is None:
                self._streams = await asyncio.open_connection(sock=self._sock)
            reader, writer = self._streams
            request = frame(fn)  # a function that cannot be pickled fails here, before anything is sent
            try:
                writer.write(request)
                await writer.drain()
                (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
                ok, value = pickle.loads(await reader.readexactly(size))
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                self._drop(f"the writer process stopped during a transaction: {exc!r}")
                raise Unavailable(
                    "the ingest writer stopped while storing this request; it was not acknowledged, "
                    "send it again (events stored already count as duplicates)"
                ) from None
            except BaseException:  # cancelled half way: the stream is out of step with the writer
                self._drop("an exchange with the writer was interrupted")
                raise
        if ok:
            return value
        raise value

    def _drop(self, why: str) -> None:
        """Forget the writer: closing our end stops it once its transaction (if any) is done."""
        if self._proc is not None:
            log.warning("ingest_writer_restart", reason=why, pid=self._proc.pid, returncode=self._proc.poll())
        self._close_socket()
        self._proc = None

    def _close_socket(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
        elif self._sock is not None:
            self._sock.close()
        self._sock, self._streams = None, None

    async def close(self) -> None:
        """Stop the writer process: it finishes the transaction in progress, then exits."""
        async with self._lock:
            proc, self._proc = self._proc, None
            self._close_socket()
            if proc is None:
                return
            try:
                await asyncio.to_thread(proc.wait, STOP_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
