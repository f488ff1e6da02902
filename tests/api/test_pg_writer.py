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
