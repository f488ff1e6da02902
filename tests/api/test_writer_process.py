"""On SQLite the ingest writer is a process of its own: it lives and dies with the service."""

import os
import signal
import sys
import time
import types
from functools import partial
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from metering.db import create_database
from metering.errors import Conflict, Unavailable
from tests import writer_calls as calls
from tests.conftest import ADMIN_TOKEN
from tests.factories import event
from tests.process import ServerProcess

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        zombie = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        if zombie and len(os.listdir(f"/proc/{pid}/task")) == 1:
            return True  # exited, threads and all, not yet reaped by its parent
        time.sleep(0.05)
    return False


@pytest.fixture
async def sqlite_db(db_url, engine_name):
    if engine_name != "sqlite":
        pytest.skip("the writer process is SQLite's")
    db = create_database(db_url)
    yield db
    await db.dispose()


async def test_writer_runs_in_its_own_process_and_stops_with_the_database(sqlite_db):
    runner = sqlite_db.write_runner()
    pid = await runner.run(calls.pid)
    assert pid == runner.pid and pid != os.getpid()
    await sqlite_db.dispose()
    assert gone(pid)


async def test_errors_come_back_whole_and_roll_back(sqlite_db, db):
    runner = sqlite_db.write_runner()
    with pytest.raises(Conflict) as refused:
        await runner.run(calls.refuse)
    assert refused.value.detail == "refused" and refused.value.errors == [{"message": "kept", "index": 4}]
    with pytest.raises(RuntimeError, match="after the insert"):
        await runner.run(calls.insert_then_fail)
    async with db.read() as session:
        assert (await session.execute(text("SELECT count(*) FROM api_tokens"))).scalar_one() == 0


async def test_a_writer_that_died_is_started_again(sqlite_db):
    runner = sqlite_db.write_runner()
    first = await runner.run(calls.pid)
    os.kill(first, signal.SIGKILL)
    assert gone(first)
    second = await runner.run(calls.pid)  # between transactions: nobody notices
    assert second != first
    with pytest.raises(Unavailable):  # during one: that request is not acknowledged
        await runner.run(calls.die)
    assert await runner.run(calls.pid) not in (first, second)


async def test_a_request_the_writer_cannot_read_is_an_error_not_a_crash(sqlite_db, monkeypatch):
    runner = sqlite_db.write_runner()
    before = await runner.run(calls.pid)
    # A module only this process has: the function pickles here, and fails to unpickle there.
    ghost = types.ModuleType("tests.ghost_module")
    ghost.pid = lambda conn: os.getpid()
    ghost.pid.__module__, ghost.pid.__qualname__ = ghost.__name__, "pid"
    monkeypatch.setitem(sys.modules, ghost.__name__, ghost)
    with pytest.raises(ModuleNotFoundError):
        await runner.run(ghost.pid)
    with pytest.raises(AttributeError):  # cannot be pickled at all: refused before anything is sent
        await runner.run(lambda conn: None)
    assert await runner.run(calls.pid) == before


async def _tokens(db) -> list[str]:
    async with db.read() as session:
        return list((await session.execute(text("SELECT name FROM api_tokens ORDER BY name"))).scalars())


async def test_a_transaction_sent_in_stages_commits_them_all_or_none(sqlite_db, db):
    """Stages run in the writer's open transaction as they come; the commit gets their results
    in order and ends it.  A stage that fails, or one the writer cannot read, fails the whole
    transaction at its commit, as does a commit it cannot read; the next one starts clean."""
    runner = sqlite_db.write_runner()
    for name in ("a", "b"):
        runner.stage(partial(calls.insert_token, name=name))
    assert await runner.commit(calls.names, 2) == ["a", "b"]
    runner.stage(partial(calls.insert_token, name="c"))
    runner.stage(calls.refuse)
    runner.stage(partial(calls.insert_token, name="d"))  # not run: the transaction is lost already
    with pytest.raises(Conflict, match="refused"):
        await runner.commit(calls.names, 3)
    ghost = types.ModuleType("tests.ghost_stage")
    ghost.pid = lambda conn: os.getpid()
    ghost.pid.__module__, ghost.pid.__qualname__ = ghost.__name__, "pid"
    sys.modules[ghost.__name__] = ghost
    try:
        runner.stage(partial(calls.insert_token, name="e"))
        runner.stage(ghost.pid)  # pickles here, cannot be read there
    finally:
        del sys.modules[ghost.__name__]
    with pytest.raises(ModuleNotFoundError):
        await runner.commit(calls.names, 2)
    runner.stage(partial(calls.insert_token, name="g"))
    sys.modules[ghost.__name__] = ghost
    try:
        ending = runner.commit(ghost.pid, 1)  # the commit itself cannot be read there
    finally:
        del sys.modules[ghost.__name__]
    with pytest.raises(ModuleNotFoundError):
        await ending
    runner.stage(partial(calls.insert_token, name="f"))
    assert await runner.commit(calls.names, 1) == ["f"]
    assert await _tokens(db) == ["a", "b", "f"]


async def test_a_big_request_is_in_the_socket_at_once_while_the_writer_is_busy(sqlite_db):
    """A 10,000-event request is ~5 MB.  Left in the event loop's transport, it went to the
    writer a socket buffer at a time, one per pass of a loop busy parsing the next request,
    and the writer, done with the transaction before, waited for the rest (tens of ms at
    10,000-event requests from 2 clients).  The send buffer takes it whole, as far as the
    kernel allows (``net.core.wmem_max``)."""
    size = 3 << 20
    if 2 * int(Path("/proc/sys/net/core/wmem_max").read_text()) < size + (1 << 20):
        pytest.skip("this kernel caps a socket's send buffer below the request's size")
    runner = sqlite_db.write_runner()
    await runner.run(calls.pid)  # the writer process is there
    runner.stage(partial(calls.sleep, seconds=0.5))  # busy: it reads nothing meanwhile
    runner.stage(partial(calls.length, padding=b"x" * size))
    assert runner._conn.writer.transport.get_write_buffer_size() == 0  # all of it in the kernel
    assert await runner.commit(calls.names, 2) == [None, size]


async def test_stages_lost_with_a_writer_that_died_fail_their_commit(sqlite_db, db):
    """A writer killed between a transaction's stages and its commit took them with it: the
    commit reaches the new writer, which has fewer stages than it ends, and refuses it with a
    503 (nothing of it stored) rather than commit a part."""
    runner = sqlite_db.write_runner()
    first = await runner.run(calls.pid)
    runner.stage(partial(calls.insert_token, name="lost"))
    os.kill(first, signal.SIGKILL)
    assert gone(first)
    runner.stage(partial(calls.insert_token, name="second"))  # reaches the new writer
    with pytest.raises(Unavailable, match="1 of its 2 requests"):
        await runner.commit(calls.names, 2)
    runner.stage(partial(calls.insert_token, name="after"))
    assert await runner.commit(calls.names, 1) == ["after"]
    assert await _tokens(db) == ["after"]
    with pytest.raises(RuntimeError, match="open in stages"):  # a whole transaction may not go inside one
        runner.stage(partial(calls.insert_token, name="x"))
        await runner.run(calls.pid)
    await runner.commit(calls.names, 1)


async def test_stages_without_their_commit_are_not_stored_when_the_server_goes(sqlite_db, db):
    """The server's end closes (it stopped, or died) after some stages of a transaction and
    before its commit: the writer rolls them back as it exits.  None of them was acknowledged."""
    runner = sqlite_db.write_runner()
    pid = await runner.run(calls.pid)
    runner.stage(partial(calls.insert_token, name="orphan"))
    await sqlite_db.dispose()
    assert gone(pid)
    assert await _tokens(db) == []


def test_writer_exits_when_the_server_is_killed(db_url, db, engine_name, tmp_path):
    if engine_name != "sqlite":
        pytest.skip("the writer process is SQLite's")
    server = ServerProcess({"METERING_DATABASE_URL": db_url, "METERING_ADMIN_TOKEN": ADMIN_TOKEN,
                            "METERING_SCHEDULER__ENABLED": "false"}, tmp_path / "server.log").start()
    try:
        resp = httpx.post(f"{server.url}/v1/events", json=event("sandbox.running", "2026-01-01T00:00:00Z"),
                          headers=AUTH)
        assert resp.status_code == 202, resp.text
        children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
        assert len(children) == 1
        server.kill()  # kill -9: no shutdown code runs
        assert gone(int(children[0])), "the writer process outlived the server"
    finally:
        server.stop()
