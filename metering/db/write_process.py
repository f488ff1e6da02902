"""The SQLite ingest writer's own process: ``python -m metering.db.write_process FD PATH [MODULE ...]``.

Why a process: in the server, the writer thread and the event loop took turns on one GIL.
A 10,000-event transaction that costs ~160 ms of CPU took ~450 ms while the event loop
decoded the next request, since every statement gives the GIL up around SQLite's work and
must win it back.  In a process of its own the writer has its own GIL, and decoding and
writing run on both cores.

The server (db.writer.WriteRunner) starts it with one end of a socket pair as file
descriptor FD and talks in frames: an 8-byte length, then what to do with the request (one
byte: ``RUN``, ``STAGE``, ``COMMIT``), then its pickle.  A request is a function (a
module-level one, or a ``functools.partial`` of one: pickled by name, so both sides import
the same code).  ``RUN``: the writer runs it in one write transaction (db.sqlite_writer) and
answers ``(True, result)`` or ``(False, error)``.  ``STAGE``: it runs in the open transaction,
unanswered; ``COMMIT`` (the function and how many stages it ends) ends that transaction and
is answered like a run.  MODULEs are imported up front, so the first request does not wait
for them.

It ends when the server's end closes: the server stopped, or died.  A transaction in
progress then is finished first; if the server died meanwhile, that transaction is
stored but was never acknowledged, and the sender's retry finds its events as duplicates.
One sent in stages whose commit never came is rolled back.
"""

from __future__ import annotations

import gc
import importlib
import pickle
import signal
import socket
import sys
import traceback
from functools import partial

from metering.db.sqlite_writer import SqliteWriter
from metering.db.writer import COMMIT, HEADER, STAGE, frame


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None  # the server's end is closed
        got += n
    return bytes(buf)


def _receive(sock: socket.socket) -> bytes | None:
    head = _recv_exactly(sock, HEADER.size)
    return None if head is None else _recv_exactly(sock, HEADER.unpack(head)[0])


def _answer(kind: bytes, request: memoryview, writer: SqliteWriter) -> bytes:
    try:
        if kind == COMMIT:
            try:
                fn, parts = pickle.loads(request)
            except Exception:
                writer.rollback()  # its stages must not go into the next transaction
                raise
            return frame((True, writer.commit(fn, parts)))
        return frame((True, writer.run(pickle.loads(request))))
    except Exception as exc:  # noqa: BLE001 - it is the request's answer
        try:
            return frame((False, exc))
        except Exception:  # noqa: BLE001 - not picklable: send what it said, with where
            return frame((False, RuntimeError(f"ingest writer: {''.join(traceback.format_exception(exc))}")))


def serve(sock: socket.socket, writer: SqliteWriter) -> None:
    while (request := _receive(sock)) is not None:
        kind, body = request[:1], memoryview(request)[1:]
        if kind == STAGE:
            writer.stage(partial(pickle.loads, body))  # a pickle it cannot read fails the transaction
            continue
        try:
            sock.sendall(_answer(kind, body, writer))
        except OSError:
            return  # the server is gone


def main(argv: list[str]) -> None:
    fd, path, *preload = argv
    # Ctrl-C in a terminal reaches the whole process group: the server shuts down gracefully
    # and closes our socket when its requests are answered, which is when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for module in preload:
        importlib.import_module(module)
    gc.collect()
    gc.freeze()  # the imports' objects live as long as we do: no collection need walk them
    sock = socket.socket(fileno=int(fd))
    writer = SqliteWriter(path)
    try:
        serve(sock, writer)
    finally:
        writer.close()
        sock.close()


if __name__ == "__main__":
    main(sys.argv[1:])
