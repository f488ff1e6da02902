"""Run events are counted through a partial index that lifecycle events never enter."""

from sqlalchemy import insert, text

from metering.core.timeutil import parse_time
from metering.events.models import Event
from metering.reports.service import run_counts, run_counts_query
from tests.usage.test_query_plan import explain

HOUR = 3_600_000_000


def row(i: int, type_: str, workspace: str, time: int) -> dict:
    return {"source": "/test", "event_id": f"e{i}", "type": type_, "time": time, "workspace_id": workspace,
            "deployment_id": "d", "sandbox_id": f"s{i % 50}", "run_id": f"r{i}", "template": "giga-mini",
            "minutes": None, "body_hash": "0" * 64, "payload": "{}", "received_at": time}


async def test_run_counts_use_the_partial_index(db):
    base = parse_time("2026-01-01T00:00:00Z")
    types = ["sandbox.running", "sandbox.extended", "sandbox.stopped", "run.queued", "run.completed"]
    rows = [row(i, types[i % len(types)], f"ws_{i % 40}", base + (i % 72) * HOUR) for i in range(4000)]
    async with db.write() as session:
        await session.execute(insert(Event.__table__), rows)
    async with db.write() as session:
        await session.execute(text("ANALYZE"))

    day = (base, base + 24 * HOUR)
    plan = await explain(db, run_counts_query("ws_3", *day))
    assert "ix_events_runs" in plan, plan
    definition = ("SELECT sql FROM sqlite_master WHERE name = 'ix_events_runs'" if db.is_sqlite
                  else "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_events_runs'")
    async with db.read() as session:
        sql = (await session.execute(text(definition))).scalar()
    assert "WHERE" in sql and "run.queued" in sql, sql  # partial: lifecycle events are not in it
    async with db.read() as session:
        counts = await run_counts(session, "ws_3", *day)
    expected = [r for r in rows if r["workspace_id"] == "ws_3" and day[0] <= r["time"] < day[1]]
    assert counts == {t.split(".")[1]: sum(r["type"] == t for r in expected)
                      for t in ("run.queued", "run.completed") if any(r["type"] == t for r in expected)}
