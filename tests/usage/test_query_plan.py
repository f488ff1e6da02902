"""A workspace-month usage query reads that workspace's rows through indexes."""

from sqlalchemy import insert, select, text

from metering.core.timeutil import parse_time
from metering.exports.usage import open_intervals
from metering.usage.models import UsageExtension, UsageInterval, still_running
from metering.usage.service import extensions_query, intervals_query

HOUR = 3_600_000_000


async def explain(db, stmt) -> str:
    async with db.read() as session:
        sql = str(stmt.compile(dialect=session.bind.dialect, compile_kwargs={"literal_binds": True}))
        prefix = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN "
        rows = (await session.execute(text(prefix + sql))).all()
    return "\n".join(str(r[-1]) for r in rows)


async def fill(db) -> None:
    """200 workspaces x 100 closed intervals and extensions; 20 sandboxes still running."""
    base = parse_time("2025-01-01T00:00:00Z")
    intervals, extensions = [], []
    for ws in range(200):
        for i in range(100):
            start = base + i * 24 * HOUR
            owner = {"workspace_id": f"ws_{ws}", "deployment_id": "d", "sandbox_id": f"s{i}", "template": "giga-mini"}
            intervals.append({**owner, "start": start, "end": start + HOUR})
            extensions.append({**owner, "time": start, "count": 1})
        if ws % 10 == 7:  # a few sandboxes still running
            intervals.append({**owner, "sandbox_id": "s_running", "start": base + 300 * 24 * HOUR, "end": None})
    async with db.write() as session:
        await session.execute(insert(UsageInterval.__table__), intervals)
        await session.execute(insert(UsageExtension.__table__), extensions)
    async with db.write() as session:
        await session.execute(text("ANALYZE"))


async def test_usage_query_uses_workspace_indexes(db):
    await fill(db)
    start, end = parse_time("2025-02-01T00:00:00Z"), parse_time("2025-03-01T00:00:00Z")
    # One workspace (a usage query) or several (a billing run's chunk): index ranges either way.
    for ids in (["ws_7"], ["ws_7", "ws_8", "ws_9"]):
        iv_plan = await explain(db, intervals_query(ids, start, end))
        ext_plan = await explain(db, extensions_query(ids, start, end))
        if db.is_sqlite:
            assert "ix_usage_intervals_ws_start" in iv_plan and "ix_usage_intervals_open" in iv_plan, iv_plan
            assert "ix_usage_extensions_ws_time" in ext_plan, ext_plan
            assert "SCAN usage_intervals" not in iv_plan.replace("USING INDEX", "")
        else:
            assert "Seq Scan" not in iv_plan and "ix_usage_intervals_ws_" in iv_plan, iv_plan
            assert "Seq Scan" not in ext_plan and "ix_usage_extensions_ws_time" in ext_plan, ext_plan


async def test_running_intervals_of_all_workspaces_come_from_the_partial_index(db):
    """Billing candidates and exports ask for every running interval: the small partial
    index, never a walk over all of history along ix_usage_intervals_start."""
    await fill(db)
    end = parse_time("2026-01-01T00:00:00Z")
    iv = UsageInterval.__table__
    for stmt in (still_running(select(iv.c.workspace_id), end), open_intervals(end, None)):
        plan = await explain(db, stmt)
        assert "ix_usage_intervals_open" in plan, plan
        assert "ix_usage_intervals_start" not in plan and "Seq Scan" not in plan, plan
