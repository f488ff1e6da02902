"""The PostgreSQL ingest writer, on a connection of its own (db.pg_writer).

A connection the server closes between transactions is replaced; a transaction that finds
it gone before anything came back runs again; one that loses it later is not acknowledged
(503) and leaves nothing; an error rolls its transaction back and the connection goes on.
"""

import asyncio

import pytest
from sqlalchemy import text

from metering.errors import Unavailable

MARK = ("INSERT INTO usage_changed_days (workspace_id, day, version) VALUES ('ws_pg_writer', 0, 1) "
        "ON CONFLICT (workspace_id, day) DO UPDATE SET version = usage_changed_days.version + 1")


@pytest.fixture
def runner(db, engine_name):
    if engine_name != "postgresql":
        pytest.skip("the SQLite writer is a process of its own: tests/api/test_writer_process.py")
    return db.write_runner()


def _pid(tx):
    return tx.rows("SELECT pg_backend_pid()", ())[0][0]


async def _marks(db):
    async with db.read() as session:
        return (await session.execute(text("SELECT count(*) FROM usage_changed_days WHERE workspace_id = 'ws_pg_writer'"))
                ).scalar_one()


async def test_a_connection_closed_between_transactions_is_replaced(runner, db):
    first = await runner.run(_pid)
    async with db.connect() as conn:
        await conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(first)})")
    await asyncio.sleep(0.2)
    assert await runner.run(_pid) != first


async def test_gone_before_its_first_answer_the_transaction_runs_again(runner, db):
    tries = []

    def write(tx):
        tries.append(1)
        if len(tries) == 1:  # BEGIN and this go in one round trip, which never comes back
            tx.open("SELECT pg_terminate_backend(pg_backend_pid())")
        tx.count(MARK, ())
        return "stored"

    assert await runner.run(write) == "stored"
    assert len(tries) == 2 and await _marks(db) == 1


async def test_lost_mid_transaction_is_503_and_leaves_nothing(runner, db):
    def write(tx):
        tx.open("SELECT 1")
        tx.count(MARK, ())
        tx.rows("SELECT pg_terminate_backend(pg_backend_pid())", ())

    with pytest.raises(Unavailable):
        await runner.run(write)
    assert await _marks(db) == 0
    assert await runner.run(_pid)  # and the next transaction has a connection


async def test_an_error_rolls_back_and_the_connection_goes_on(runner, db):
    first = await runner.run(_pid)

    def write(tx):
        tx.open("SELECT 1")
        tx.count(MARK, ())
        with tx.savepoint():
            tx.count(MARK, ())
        raise ValueError("the caller's own error")

    with pytest.raises(ValueError):
        await runner.run(write)
    assert await _marks(db) == 0
    assert await runner.run(_pid) == first


async def test_copy_stores_its_rows_and_a_stored_key_is_key_taken(runner, db):
    """``PgTransaction.copy`` (the events' optimistic insert, events.service._insert): how many
    rows went in; a key stored before fails the whole COPY as ``KeyTaken``, and rolled back to
    its savepoint the transaction goes on with what it stored before."""
    from metering.db.statements import KeyTaken

    async with db.connect() as conn:
        await conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS pg_writer_copy (k text PRIMARY KEY, n bigint, note text)")
        await conn.exec_driver_sql("DELETE FROM pg_writer_copy")
        await conn.commit()

    def write(tx):
        tx.open("SELECT 1")
        copied = tx.copy("pg_writer_copy", ("k", "n", "note"), [("a", 1, None), ("b", 2**40, 'quote " and \\ backslash')])
        with pytest.raises(KeyTaken):
            with tx.savepoint():
                tx.copy("pg_writer_copy", ("k", "n", "note"), [("c", 3, None), ("a", 4, None)])
        return copied

    assert await runner.run(write) == 2
    async with db.read() as session:
        rows = (await session.execute(text("SELECT k, n, note FROM pg_writer_copy ORDER BY k"))).all()
    assert [tuple(r) for r in rows] == [("a", 1, None), ("b", 2**40, 'quote " and \\ backslash')]


async def _crossing(runner, db):
    """Two transactions on the writer's two connections at once, each inserting first the key
    the other inserts second: each waits for the other, and PostgreSQL fails one of them
    (after its deadlock_timeout).  Their outcomes, how many tries they took, the keys stored."""
    async with db.connect() as conn:
        await conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS pg_writer_keys (k text PRIMARY KEY)")
        await conn.exec_driver_sql("DELETE FROM pg_writer_keys")
        await conn.commit()
    await asyncio.gather(*(runner.run(_pid) for _ in range(2)))  # both connections open: they start together
    tries = []

    def insert(first, second):
        def write(tx):
            tries.append(first)
            tx.open(f"INSERT INTO pg_writer_keys VALUES ('{first}') ON CONFLICT DO NOTHING")
            tx.rows("SELECT pg_sleep(0.5)", ())  # the other transaction takes its first key meanwhile
            tx.count(f"INSERT INTO pg_writer_keys VALUES ('{second}') ON CONFLICT DO NOTHING", ())
            return tx.rows("SELECT pg_backend_pid()", ())[0][0]
        return write

    outcomes = await asyncio.gather(runner.run(insert("a", "b")), runner.run(insert("b", "a")), return_exceptions=True)
    async with db.read() as session:
        keys = (await session.execute(text("SELECT k FROM pg_writer_keys ORDER BY k"))).scalars().all()
    return outcomes, len(tries), keys


async def test_two_transactions_run_at_once_and_a_deadlock_between_them_runs_again(runner, db):
    outcomes, tries, keys = await _crossing(runner, db)
    assert all(isinstance(pid, int) for pid in outcomes) and outcomes[0] != outcomes[1]  # on two connections
    assert tries >= 3  # one ran again (its second try may deadlock once more: then the other's)
    assert keys == ["a", "b"]


async def test_a_deadlock_that_keeps_coming_back_is_503_and_stores_nothing(runner, db, monkeypatch):
    from metering.db import pg_writer

    monkeypatch.setattr(pg_writer, "DEADLOCK_TRIES", 1)
    outcomes, tries, keys = await _crossing(runner, db)
    assert tries == 2 and sorted(type(o).__name__ for o in outcomes) == ["Unavailable", "int"]
    assert keys == ["a", "b"]  # both the other's


async def test_more_transactions_than_connections_keep_both_connections_busy(runner):
    """Four callers at once (the HTTP and the stream's writers, two groups each): two on each
    connection, not three waiting for the first one while the second is free."""
    def slow(tx):
        tx.rows("SELECT pg_sleep(0.2)", ())
        return _pid(tx)

    pids = await asyncio.gather(*(runner.run(slow) for _ in range(4)))
    assert sorted(pids.count(pid) for pid in set(pids)) == [2, 2]
