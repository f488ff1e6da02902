"""Token checks read on the event loop where SQLite allows it, and never wait there for a lock."""

import sqlite3
import threading
import time

import pytest
from sqlalchemy import text

from metering.db import create_database


def count_under_write_lock(conn) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """A read that takes the write lock: it must wait while another connection holds it."""
    conn.exec_driver_sql("PRAGMA query_only=OFF")  # reader connections may not even take the lock
    try:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        count = conn.execute(text("SELECT count(*) FROM api_tokens")).scalar()
        conn.exec_driver_sql("ROLLBACK")
        return count, threading.current_thread().name
    finally:
        conn.exec_driver_sql("PRAGMA query_only=ON")


async def test_a_short_read_that_would_wait_for_a_lock_goes_to_a_thread(db_url, db, engine_name):
    if engine_name != "sqlite":
        pytest.skip("SQLite's locks")
    reads = create_database(db_url)
    try:
        count, where = await reads.run_short(count_under_write_lock)
        assert (count, where) == (0, threading.current_thread().name)  # free: read right here
        holder = sqlite3.connect(db_url.split("///", 1)[1], isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO api_tokens (id, name, token_hash, scopes, created_at) "
                       "VALUES ('tok_l', 'l', 'h', 'admin', 0)")

        def release() -> None:
            time.sleep(0.5)
            holder.execute("COMMIT")
            holder.close()

        threading.Thread(target=release).start()
        began = time.monotonic()
        count, where = await reads.run_short(count_under_write_lock)
        assert count == 1 and where.startswith("sqlite-reader")  # it waited, on a reader thread
        assert time.monotonic() - began >= 0.3
    finally:
        await reads.dispose()
