"""Re-rating preview: exact, per workspace and line, by the billing code, nothing stored."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import text

from metering.core.periods import period_bounds
from metering.core.timeutil import format_time
from metering.db.base import now_us
from metering.invoices.service import bill_workspaces
from metering.pricing.preview import preview
from tests.factories import BATCH, DEFAULT_PRICES, event

JAN = {"period_start": "2026-01-01T00:00:00Z", "period_end": "2026-02-01T00:00:00Z"}
HOUR_US = 3_600_000_000
counter = itertools.count()


def version(effective_from: str, **changes: tuple[str, str]) -> dict:
    prices = {**DEFAULT_PRICES, **changes}
    return {"effective_from": effective_from,
            "prices": {t: {"hourly": h, "extension": e} for t, (h, e) in prices.items()}}


async def counts(db) -> tuple:
    async with db.read() as session:
        return [(await session.execute(text(f"SELECT count(*) FROM {t}"))).scalar()
                for t in ("price_versions", "invoices", "invoice_lines", "audit_log")]


async def test_preview_of_a_finalized_period(client, admin, db, make_token):
    evs = [event("sandbox.running", "2026-01-10T10:00:00Z", template="giga-max"),
           event("sandbox.stopped", "2026-01-10T11:00:00Z"),
           event("sandbox.running", "2026-01-20T10:00:00Z", template="giga-max", sandbox_id="sb_2"),
           event("sandbox.extended", "2026-01-20T10:05:00Z", template="giga-max", sandbox_id="sb_2", minutes=30),
           event("sandbox.stopped", "2026-01-20T12:00:00Z", sandbox_id="sb_2"),
           event("sandbox.running", "2026-01-20T10:00:00Z", workspace_id="ws_2", template="giga-mini",
                 sandbox_id="sb_3"),
           event("sandbox.stopped", "2026-01-20T10:30:00Z", workspace_id="ws_2", sandbox_id="sb_3")]
    assert (await client.post("/v1/events", json=evs, headers={**admin, **BATCH})).status_code == 202
    assert (await client.post("/v1/billing-runs", json=JAN, headers=admin)).status_code == 201
    invoices = {i["workspace_id"]: i for i in (await client.get("/v1/invoices", headers=admin)).json()["items"]}
    before = await counts(db)
    body = {"version": version("2026-01-15T00:00:00Z", **{"giga-max": ("1.00", "0.25")}), **JAN}
    resp = await client.post("/v1/prices/preview", json=body, headers=admin)
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert (got["current"], got["rerated"], got["delta"]) == ("2.850000", "3.350000", "0.500000")
    ws1, ws2 = got["items"]
    assert (ws1["workspace_id"], ws1["invoice_id"], ws1["status"]) == ("ws_1", invoices["ws_1"]["id"], "finalized")
    assert (ws1["current"], ws1["rerated"], ws1["delta"]) == ("2.800000", "3.300000", "0.500000")
    assert ws1["current"] == invoices["ws_1"]["total"]
    assert ws1["lines"] == [
        {"kind": "extension", "deployment_id": "dep_1", "template": "giga-max",
         "current": "0.400000", "rerated": "0.500000", "delta": "0.100000"},
        {"kind": "running", "deployment_id": "dep_1", "template": "giga-max",
         "current": "2.400000", "rerated": "2.800000", "delta": "0.400000"},
    ]
    assert (ws2["workspace_id"], ws2["delta"], ws2["current"]) == ("ws_2", "0.000000", "0.050000")
    assert await counts(db) == before  # nothing stored

    one = await client.post("/v1/prices/preview", json={**body, "workspace_id": "ws_2"}, headers=admin)
    assert [i["workspace_id"] for i in one.json()["items"]] == ["ws_2"] and one.json()["delta"] == "0.000000"
    # Cutting giga-max's price below zero, leaving a template out, or a bad period: 422.
    for bad in ({**body, "version": version("2026-01-15T00:00:00Z", **{"giga-max": ("-1", "0")})},
                {**body, "version": {"effective_from": "2026-01-15T00:00:00Z",
                                     "prices": {"giga-max": {"hourly": "1", "extension": "0"}}}},
                {**body, "period_end": "2026-01-20T00:00:00Z"}):
        assert (await client.post("/v1/prices/preview", json=bad, headers=admin)).status_code == 422
    reader = await make_token("invoices:write", "invoices:read")
    assert (await client.post("/v1/prices/preview", json=body, headers=reader)).status_code == 403


def iso(us: int) -> str:
    return format_time(us - us % 1_000_000)


prices = st.tuples(st.integers(0, 5_000_000), st.integers(0, 2_000_000)).map(
    lambda p: (f"{p[0] / 1_000_000:.6f}", f"{p[1] / 1_000_000:.6f}"))
sandbox = st.tuples(
    st.sampled_from(sorted(DEFAULT_PRICES)),
    st.integers(1, 170),  # started this many minutes ago
    st.one_of(st.none(), st.integers(1, 169)),  # stopped this many minutes ago (None: still running)
    st.integers(0, 3),  # 15-minute extensions
    st.sampled_from(["dep_a", "dep_b"]),
)


@hsettings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(sandboxes=st.lists(sandbox, min_size=1, max_size=4),
       changes=st.dictionaries(st.sampled_from(sorted(DEFAULT_PRICES)), prices, min_size=1),
       takes_effect_min=st.integers(5, 120), billed_min=st.integers(0, 120))
async def test_preview_equals_the_drafts_once_the_version_is_added(
        client, admin, db, settings, sandboxes, changes, takes_effect_min, billed_min):
    """Preview V; add V with the same effective_from; bill: the new draft is the preview."""
    now = now_us()
    start, end = period_bounds(now, settings.billing.period)
    if now - 3 * HOUR_US < start or now + 5 * HOUR_US > end:
        pytest.skip("too near a billing period boundary")
    ws = f"ws_pv_{next(counter)}"
    evs = []
    for n, (template, started, stopped, extensions, dep) in enumerate(sandboxes):
        sb = dict(workspace_id=ws, sandbox_id=f"sb_{n}", deployment_id=dep, template=template)
        evs.append(event("sandbox.running", iso(now - started * 60_000_000), **sb))
        if extensions:
            evs.append(event("sandbox.extended", iso(now - started * 60_000_000 + 1), minutes=15 * extensions, **sb))
        if stopped is not None and stopped < started:
            evs.append(event("sandbox.stopped", iso(now - stopped * 60_000_000), **sb))
    assert (await client.post("/v1/events", json=evs, headers={**admin, **BATCH})).status_code == 202
    # A unique future start for each example (versions added by earlier examples stay).
    effective = now + takes_effect_min * 60_000_000 + next(counter) * 1_000_000
    billed_at = effective + billed_min * 60_000_000
    doc = version(format_time(effective - effective % 1_000_000), **changes)
    state = client.app.state
    shown = await preview(db, settings, state.prices, doc, start, end, ws, now=billed_at)

    async def draft() -> tuple[list, str]:
        await bill_workspaces(db, settings, [ws], start, end, await state.prices.refresh(db), billed_at, False)
        inv = (await client.get("/v1/invoices", params={"workspace_id": ws}, headers=admin)).json()["items"][0]
        return [(ln["kind"], ln["deployment_id"], ln["template"], ln["amount"]) for ln in inv["lines"]], inv["total"]

    def side(which: str) -> tuple[list, str]:
        item, = shown["items"]
        lines = sorted((ln["kind"], ln["deployment_id"], ln["template"], ln[which]) for ln in item["lines"]
                       if ln[which] != "0.000000")
        return lines, item[which]

    lines, total = await draft()
    assert (sorted(lines), total) == side("current")
    assert (await client.post("/v1/prices", json=doc, headers=admin)).status_code == 201
    lines, total = await draft()
    assert (sorted(lines), total) == side("rerated")
