"""The ingest writer keeps SQLite's WAL bounded while it writes without a pause."""

import asyncio
import os

from sqlalchemy.ext.asyncio import create_async_engine

from metering.db.upsert import WriteRunner

ROW = os.urandom(64 * 1024).hex()  # 128 KiB of text, 32 pages


def _write(conn):
    conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS filler (body TEXT)")
    conn.exec_driver_sql("INSERT INTO filler VALUES " + ", ".join(["(?)"] * 12), (ROW,) * 12)


async def test_wal_starts_over_under_continuous_writes(tmp_path):
    path = tmp_path / "w.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    runner = WriteRunner(engine)
    written = 0
    try:
        while written < 120 * 2**20:  # back to back: the background checkpoint alone never catches up
            await runner.run(_write)
            written += 12 * len(ROW)
            await asyncio.sleep(0)
        wal = (tmp_path / "w.db-wal").stat().st_size
    finally:
        await engine.dispose()
    assert wal < written / 3, (wal, written)
