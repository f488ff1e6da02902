"""The ingest writer keeps SQLite's WAL bounded while it writes without a pause."""

import os
import sqlite3

from metering.db.sqlite_writer import WAL_RESTART_FRAMES, SqliteWriter

ROW = os.urandom(64 * 1024).hex()  # 128 KiB of text, 32 pages
PAGE = 4096


def _write(conn):
    conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS filler (body TEXT)")
    conn.exec_driver_sql("INSERT INTO filler VALUES " + ", ".join(["(?)"] * 12), (ROW,) * 12)


def test_wal_starts_over_under_continuous_writes(tmp_path):
    path = tmp_path / "w.db"
    writer = SqliteWriter(str(path))
    written = 0
    try:
        while written < 240 * 2**20:  # back to back: the background checkpoint alone never catches up
            writer.run(_write)
            written += 12 * len(ROW)
        # Frames in the WAL since it last started over (not the file's size, its high-water
        # mark, which also holds what was written while a background checkpoint was due);
        # read while the writer's connection is open (the last one to close empties the WAL).
        conn = sqlite3.connect(path)
        _busy, frames, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        conn.close()
    finally:
        writer.close()
    # It started over many times: what it holds now is about WAL_RESTART_FRAMES, not 60,000 pages.
    assert frames < 4 * WAL_RESTART_FRAMES < written / PAGE / 3, (frames, written // PAGE)
