"""Report files and their content, against hand-computed amounts and run counts."""

import csv
import io
import json
from pathlib import Path

from sqlalchemy import select

from metering.reports.models import Report
from metering.scheduler.runner import Scheduler
from tests.reports.data import WS1_JAN5_ITEMS, WS1_JAN5_OVERRUNS, WS1_JAN5_RUNS, WS1_JAN5_TOTALS, post_day, zero


async def make_reports(client, make_token, db, settings):
    await post_day(client, make_token)
    assert (await Scheduler(db, settings).run_job("reports")).outcome == "ok"
    async with db.read() as session:
        return {(r.workspace_id, r.start): r for r in (await session.execute(select(Report))).scalars()}


async def test_files_exist_with_exact_json(client, make_token, db, settings):
    await make_reports(client, make_token, db, settings)
    root = Path(settings.reports_dir)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "ws_1/2026-01-05.csv", "ws_1/2026-01-05.json", "ws_1/2026-01-06.csv", "ws_1/2026-01-06.json",
        "ws_2/2026-01-05.csv", "ws_2/2026-01-05.json",
    ]
    doc = json.loads((root / "ws_1/2026-01-05.json").read_text())
    assert doc["id"].startswith("rep_")
    assert {k: v for k, v in doc.items() if k != "id"} == {
        "kind": "daily_usage", "workspace_id": "ws_1", "day": "2026-01-05",
        "start": "2026-01-05T00:00:00Z", "end": "2026-01-06T00:00:00Z", "currency": "USD",
        "items": WS1_JAN5_ITEMS, "totals": WS1_JAN5_TOTALS, "runs": WS1_JAN5_RUNS,
        "carried_credit": {"balance": "0.000000", "carried_forward": "0.000000", "applied": "0.000000"},
        "overruns": WS1_JAN5_OVERRUNS,
    }
    next_day = json.loads((root / "ws_1/2026-01-06.json").read_text())
    assert next_day["items"] == [{"deployment_id": "dep_2", "template": "giga-mini",
                                  "running_seconds": "3600.000000", "running_amount": "0.100000", "extensions": 0,
                                  "extension_amount": "0.000000", "amount": "0.100000"}]
    assert next_day["totals"]["amount"] == "0.100000"
    assert next_day["runs"] == {"queued": 0, "running": 0, "completed": 1, "failed": 0}
    runs_only = json.loads((root / "ws_2/2026-01-05.json").read_text())
    assert runs_only["items"] == [] and runs_only["totals"] == zero()
    assert runs_only["runs"] == {"queued": 1, "running": 0, "completed": 0, "failed": 0}


async def test_csv_is_rfc4180_with_the_same_numbers(client, make_token, db, settings):
    await make_reports(client, make_token, db, settings)
    raw = (Path(settings.reports_dir) / "ws_1/2026-01-05.csv").read_bytes()
    assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    rows = list(csv.DictReader(io.StringIO(raw.decode(), newline="")))
    assert list(rows[0]) == ["record", "workspace_id", "day", "deployment_id", "template", "run_status",
                             "running_seconds", "running_amount", "extensions", "extension_amount", "amount", "runs",
                             "sandbox_id", "lifetime_end"]
    usage = [r for r in rows if r["record"] == "usage"]
    assert [(r["deployment_id"], r["template"], r["running_seconds"], r["running_amount"], r["extensions"],
             r["extension_amount"], r["amount"]) for r in usage] == [
        (i["deployment_id"], i["template"], i["running_seconds"], i["running_amount"], str(i["extensions"]),
         i["extension_amount"], i["amount"]) for i in WS1_JAN5_ITEMS]
    (total,) = [r for r in rows if r["record"] == "total"]
    assert (total["running_seconds"], total["running_amount"], total["extensions"], total["extension_amount"],
            total["amount"]) == ("9001.000000", "0.400028", "2", "0.100000", "0.500028")
    runs = {r["run_status"]: int(r["runs"]) for r in rows if r["record"] == "runs"}
    assert runs == WS1_JAN5_RUNS
    overruns = [(r["sandbox_id"], r["lifetime_end"], r["running_seconds"], r["running_amount"], r["amount"])
                for r in rows if r["record"] == "overrun"]
    assert overruns == [(o["sandbox_id"], o["lifetime_end"], o["overrun_seconds"], o["overrun_amount"],
                         o["billed_amount"]) for o in WS1_JAN5_OVERRUNS]
    assert {r["workspace_id"] for r in rows} == {"ws_1"} and {r["day"] for r in rows} == {"2026-01-05"}


async def test_dot_workspace_ids_stay_inside_the_reports_dir(client, make_token, db, settings):
    from tests.factories import BATCH, event

    auth = await make_token("events:write")
    events = [event("run.queued", "2026-01-05T10:00:00Z", workspace_id=ws, run_id="r", source=f"/{ws}")
              for ws in ("..", ".hidden")]
    assert (await client.post("/v1/events", json=events, headers={**auth, **BATCH})).status_code == 202
    assert (await Scheduler(db, settings).run_job("reports")).outcome == "ok"
    root = Path(settings.reports_dir).resolve()
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.json"))
    assert files == ["%2E./2026-01-05.json", "%2Ehidden/2026-01-05.json"]
    assert not list(root.parent.glob("2026-01-05.*"))
