"""Token checks read on the event loop where SQLite allows it, and never wait there for a lock;
on PostgreSQL on a connection of their own, replaced when the server closes it."""

import asyncio
import sqlite3
import threading
import time

import pytest

from metering.db import create_database
from metering.db.pg_lookup import numbered
from metering.migrate import upgrade

COUNT = "SELECT count(*) FROM api_tokens WHERE scopes = :scopes"


async def test_a_lookup_that_would_wait_for_a_lock_goes_to_a_thread(tmp_path):
    path = tmp_path / "locked.db"
    await asyncio.to_thread(upgrade, f"sqlite+aiosqlite:///{path}")  # it runs an event loop of its own
    # Another connection in exclusive locking mode keeps every reader out until it lets go.
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("INSERT INTO api_tokens (id, name, token_hash, scopes, created_at) "
                   "VALUES ('tok_l', 'l', 'h', 'admin', 0)")
    reads = create_database(f"sqlite+aiosqlite:///{path}")

    def release() -> None:
        time.sleep(0.5)
        holder.execute("PRAGMA locking_mode=NORMAL")
        holder.execute("SELECT 1 FROM api_tokens").fetchone()  # the lock goes with the next access
        holder.close()

    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):  # as the event loop's read would
            sqlite3.connect(path, timeout=0).execute(COUNT, {"scopes": "admin"}).fetchone()
        threading.Thread(target=release).start()
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        began = time.monotonic()
        assert await reads.first_row(COUNT, {"scopes": "admin"}) == (1,)
        assert time.monotonic() - began >= 0.3  # it waited for the lock...
        ticker.cancel()
        assert ticks >= 10  # ...and the event loop went on meanwhile
        assert await reads.first_row(COUNT, {"scopes": "none"}) == (0,)  # and reads in place again
    finally:
        await reads.dispose()


async def test_first_row_gives_a_tuple_or_none(db):
    assert await db.first_row("SELECT 1, 'a' WHERE :x = 1", {"x": 1}) == (1, "a")
    assert await db.first_row("SELECT 1 WHERE :x = 1", {"x": 2}) is None


def test_named_parameters_become_numbered_ones():
    assert numbered("SELECT :a, :b::text, :a WHERE x = :b_2") == ("SELECT $1, $2::text, $1 WHERE x = $3", ["a", "b", "b_2"])


async def test_lookup_survives_the_server_closing_its_connection(db, engine_name):
    """A PostgreSQL restart or an idle timeout closes the lookup's connection: the next token
    check must not fail for it."""
    if engine_name != "postgresql":
        pytest.skip("SQLite has no server to close a connection")
    (first_pid,) = await db.first_row("SELECT pg_backend_pid() WHERE :x = 1", {"x": 1})
    async with db.connect() as conn:
        await conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(first_pid)})")
    await asyncio.sleep(0.2)  # the server has closed it; asyncpg may not have noticed yet
    (second_pid,) = await db.first_row("SELECT pg_backend_pid() WHERE :x = 1", {"x": 1})
    assert second_pid != first_pid
    assert await db.first_row("SELECT 1, 'a' WHERE :x = 1", {"x": 1}) == (1, "a")


async def test_pooled_connections_survive_the_server_closing_them(db, engine_name):
    """No pre-ping round trip on checkout: a pooled connection the server closed is seen
    closed and replaced, and the read on it does not fail."""
    if engine_name != "postgresql":
        pytest.skip("SQLite has no server to close a connection")
    async with db.connect() as killer:
        async with db.connect() as conn:
            first_pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
        await killer.exec_driver_sql(f"SELECT pg_terminate_backend({int(first_pid)})")  # in the pool now
    await asyncio.sleep(0.2)
    for _ in range(3):  # whichever pooled connection each checkout takes
        async with db.connect() as conn:
            assert (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one() != first_pid
