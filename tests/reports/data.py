"""One day of activity with hand-computed report amounts, shared by the report,
scheduler and webhook tests."""

from __future__ import annotations

from tests.factories import BATCH, event

DAY = "2026-01-05"


def day_events() -> list[dict]:
    return [
        # ws_1 / dep_1 / giga-standard ($0.20/h, $0.05 per extension): 10:00-11:30 = 5400 s = 0.30,
        # one 30-minute extension = 2 x 0.05 = 0.10.
        event("sandbox.running", "2026-01-05T10:00:00Z", sandbox_id="sb_1", template="giga-standard"),
        event("sandbox.extended", "2026-01-05T10:15:00Z", sandbox_id="sb_1", template="giga-standard", minutes=30),
        event("sandbox.stopped", "2026-01-05T11:30:00Z", sandbox_id="sb_1"),
        # ws_1 / dep_1 / giga-mini ($0.10/h): one second = 0.1/3600 = 0.0000277... -> 0.000028.
        event("sandbox.running", "2026-01-05T12:00:00Z", sandbox_id="sb_3", template="giga-mini"),
        event("sandbox.stopped", "2026-01-05T12:00:01Z", sandbox_id="sb_3"),
        # ws_1 / dep_2 / giga-mini across midnight: 1 h on the 5th (0.10), 1 h on the 6th (0.10).
        event("sandbox.running", "2026-01-05T23:00:00Z", deployment_id="dep_2", sandbox_id="sb_2"),
        event("sandbox.stopped", "2026-01-06T01:00:00Z", deployment_id="dep_2", sandbox_id="sb_2"),
        # Runs of ws_1 on the 5th: 3 queued, 2 running, 1 completed, 1 failed.
        event("run.queued", "2026-01-05T10:01:00Z", run_id="run_1", source="/platform/runs"),
        event("run.running", "2026-01-05T10:02:00Z", run_id="run_1", source="/platform/runs"),
        event("run.completed", "2026-01-05T10:30:00Z", run_id="run_1", source="/platform/runs"),
        event("run.queued", "2026-01-05T10:40:00Z", run_id="run_2", source="/platform/runs"),
        event("run.running", "2026-01-05T10:41:00Z", run_id="run_2", source="/platform/runs"),
        event("run.failed", "2026-01-05T10:50:00Z", run_id="run_2", source="/platform/runs"),
        event("run.queued", "2026-01-05T23:59:59.999999Z", run_id="run_3", source="/platform/runs"),
        # ws_2 has runs only (no sandbox usage that day): it still gets a report.
        event("run.queued", "2026-01-05T08:00:00Z", workspace_id="ws_2", run_id="run_9", source="/platform/runs"),
        # A run event the next day at 00:00 belongs to the 6th.
        event("run.completed", "2026-01-06T00:00:00Z", run_id="run_3", source="/platform/runs"),
    ]


def zero() -> dict:
    return {"running_seconds": "0.000000", "running_amount": "0.000000", "extensions": 0,
            "extension_amount": "0.000000", "amount": "0.000000"}


# The lifetime guard's section: sb_1 lived until 10:45 (15 min + a 30-minute extension) and
# ran to 11:30; sb_2 lived until 23:15 and still ran at midnight.  Billed in full (bill_beyond).
WS1_JAN5_OVERRUNS = [
    {"deployment_id": "dep_1", "sandbox_id": "sb_1", "template": "giga-standard", "started": "2026-01-05T10:00:00Z",
     "lifetime_end": "2026-01-05T10:45:00Z", "start": "2026-01-05T10:45:00Z", "end": "2026-01-05T11:30:00Z",
     "overrun_seconds": "2700.000000", "overrun_amount": "0.150000", "billed_amount": "0.150000"},
    {"deployment_id": "dep_2", "sandbox_id": "sb_2", "template": "giga-mini", "started": "2026-01-05T23:00:00Z",
     "lifetime_end": "2026-01-05T23:15:00Z", "start": "2026-01-05T23:15:00Z", "end": "2026-01-06T00:00:00Z",
     "overrun_seconds": "2700.000000", "overrun_amount": "0.075000", "billed_amount": "0.075000"},
]
WS1_JAN5_ITEMS = [
    {"deployment_id": "dep_1", "template": "giga-mini", "running_seconds": "1.000000",
     "running_amount": "0.000028", "extensions": 0, "extension_amount": "0.000000", "amount": "0.000028"},
    {"deployment_id": "dep_1", "template": "giga-standard", "running_seconds": "5400.000000",
     "running_amount": "0.300000", "extensions": 2, "extension_amount": "0.100000", "amount": "0.400000"},
    {"deployment_id": "dep_2", "template": "giga-mini", "running_seconds": "3600.000000",
     "running_amount": "0.100000", "extensions": 0, "extension_amount": "0.000000", "amount": "0.100000"},
]
# Exact sums rounded once: 0.3 + 0.1 + 0.0000277... = 0.4000277... -> 0.400028.
WS1_JAN5_TOTALS = {"running_seconds": "9001.000000", "running_amount": "0.400028", "extensions": 2,
                   "extension_amount": "0.100000", "amount": "0.500028"}
WS1_JAN5_RUNS = {"queued": 3, "running": 2, "completed": 1, "failed": 1}

# (workspace, day) pairs that get a report.
EXPECTED_REPORTS = {("ws_1", "2026-01-05"), ("ws_1", "2026-01-06"), ("ws_2", "2026-01-05")}


async def post_day(client, make_token) -> None:  # type: ignore[no-untyped-def]
    auth = await make_token("events:write")
    resp = await client.post("/v1/events", json=day_events(), headers={**auth, **BATCH})
    assert resp.status_code == 202, resp.text
    assert resp.json()["accepted"] == len(day_events())
