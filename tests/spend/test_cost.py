"""``GET /v1/workspaces/{id}/cost``: the usage query's total so far, the rate, the forecast."""

from decimal import Decimal
from fractions import Fraction

from sqlalchemy import event as sa_event

from tests.factories import BATCH, event

AS_OF = "2026-03-10T04:00:00Z"


def lifecycle(ws="ws_1"):
    return [
        # giga-mini running since 01:00, still running at 04:00: 3 h = 0.30, and 0.10/h.
        event("sandbox.running", "2026-03-10T01:00:00Z", workspace_id=ws, sandbox_id="sb_a", template="giga-mini"),
        # giga-standard 02:00-03:00 (0.20) and one 15-minute extension (0.05).
        event("sandbox.running", "2026-03-10T02:00:00Z", workspace_id=ws, sandbox_id="sb_b", template="giga-standard"),
        event("sandbox.extended", "2026-03-10T02:10:00Z", workspace_id=ws, sandbox_id="sb_b",
              template="giga-standard", minutes=15),
        event("sandbox.stopped", "2026-03-10T03:00:00Z", workspace_id=ws, sandbox_id="sb_b"),
        # In February: not this period's spend.
        event("sandbox.running", "2026-02-27T00:00:00Z", workspace_id=ws, sandbox_id="sb_c", template="giga-max"),
        event("sandbox.stopped", "2026-02-27T05:00:00Z", workspace_id=ws, sandbox_id="sb_c"),
        # Starts after as_of: neither spent nor running then.
        event("sandbox.running", "2026-03-10T05:00:00Z", workspace_id=ws, sandbox_id="sb_d", template="giga-pro"),
    ]


async def test_cost_so_far_matches_the_usage_query(client, admin):
    assert (await client.post("/v1/events", json=lifecycle(), headers={**admin, **BATCH})).status_code == 202
    resp = await client.get("/v1/workspaces/ws_1/cost", params={"as_of": AS_OF}, headers=admin)
    assert resp.status_code == 200, resp.text
    cost = resp.json()
    usage = (await client.get("/v1/workspaces/ws_1/usage", headers=admin, params={
        "start": "2026-03-01T00:00:00Z", "end": AS_OF, "as_of": AS_OF})).json()
    assert cost["spent"] == usage["total"] == "0.550000"
    assert cost["period_start"] == "2026-03-01T00:00:00Z" and cost["period_end"] == "2026-04-01T00:00:00Z"
    assert cost["as_of"] == AS_OF
    assert (cost["running_sandboxes"], cost["hourly_rate"]) == (1, "0.100000")
    # 21 days and 20 hours left at 0.10/h: 0.55 + 524 * 0.10.
    hours_left = Fraction(21 * 24 + 20)
    assert Decimal(cost["forecast"]) == Decimal("0.55") + Decimal(hours_left.numerator) * Decimal("0.10")
    assert cost["forecast"] == "52.950000"


async def test_forecast_is_exact_and_rounded_once(client, admin):
    # 0.10/h from 00:00:00 to 00:00:07 spent = 7/36000 dollars; hours left 743h59m53s.
    events = [event("sandbox.running", "2026-03-01T00:00:00Z", sandbox_id="sb_x", template="giga-mini")]
    await client.post("/v1/events", json=events, headers={**admin, **BATCH})
    cost = (await client.get("/v1/workspaces/ws_1/cost", params={"as_of": "2026-03-01T00:00:07Z"},
                             headers=admin)).json()
    assert cost["spent"] == "0.000194"  # 0.000194444...
    # Exact: 0.1 * 744 h = 74.4 (the spent part plus the rest add up before rounding).
    assert cost["forecast"] == "74.400000"


async def test_cost_checks_scope_workspace_and_input(client, admin, make_token):
    bound = await make_token("usage:read", workspace_id="ws_2")
    assert (await client.get("/v1/workspaces/ws_1/cost", headers=bound)).status_code == 404
    assert (await client.get("/v1/workspaces/ws_2/cost", headers=bound)).status_code == 200
    no_scope = await make_token("events:write")
    assert (await client.get("/v1/workspaces/ws_1/cost", headers=no_scope)).status_code == 403
    assert (await client.get("/v1/workspaces/ws_1/cost")).status_code == 401
    for bad in ("yesterday", "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z"):
        resp = await client.get("/v1/workspaces/ws_1/cost", params={"as_of": bad}, headers=admin)
        assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "as_of"
    empty = (await client.get("/v1/workspaces/ws_9/cost", params={"as_of": AS_OF}, headers=admin)).json()
    assert (empty["spent"], empty["running_sandboxes"], empty["forecast"]) == ("0.000000", 0, "0.000000")


async def test_cost_reads_usage_in_two_statements_whatever_the_history(db, settings):
    """The cost reads through usage.service's two index-range queries (their plans are
    checked in tests/usage/test_query_plan.py): the statement count does not grow with the
    number of sandboxes or events."""
    from metering.core.timeutil import parse_time
    from metering.pricing.service import PriceCatalog
    from metering.spend.cost import costs_of
    from metering.usage.models import UsageExtension, UsageInterval

    hour = 3_600_000_000
    base = parse_time("2026-03-01T00:00:00Z")
    owner = {"workspace_id": "ws_1", "deployment_id": "d", "template": "giga-mini"}
    async with db.write() as session:
        await session.execute(UsageInterval.__table__.insert(), [
            {**owner, "sandbox_id": f"s{i}", "start": base + i * hour, "end": base + i * hour + hour // 2}
            for i in range(300)])
        await session.execute(UsageExtension.__table__.insert(), [
            {**owner, "sandbox_id": f"s{i}", "time": base + i * hour, "count": 1} for i in range(300)])
    book = await PriceCatalog.from_file(settings.pricing_file).refresh(db)
    run = []

    def traced(conn):
        def record(conn, cursor, statement, *args):
            run.append(statement)

        sa_event.listen(conn, "before_cursor_execute", record)
        try:
            return costs_of(conn, ["ws_1"], book, (base, base + 31 * 24 * hour), base + 400 * hour,
                            settings.lifetime.policy)[0]
        finally:
            sa_event.remove(conn, "before_cursor_execute", record)

    cost = await db.run_read(traced)
    usage_reads = [s for s in run if "usage_" in s]
    assert len(usage_reads) == 2, usage_reads
    # 300 half-hours at 0.10/h and 300 extensions at 0.025.
    assert cost.spent == Fraction(300 * 50_000 + 300 * 25_000)
