"""A daily usage report's content, and its JSON and CSV renderings. Pure.

Amounts are exact until here and rounded once each (half to even): an item's amounts,
and each total from the exact sum (so items may differ from the total by rounding only,
as in usage queries).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import msgspec

from metering.core.money import format_money, format_seconds, round_micro
from metering.core.timeutil import format_time
from metering.reports.files import day_name
from metering.spend.overruns import OverrunPiece
from metering.usage.compute import Bucket, GroupKey

KIND = "daily_usage"
RUN_STATUSES = ("queued", "running", "completed", "failed")
CSV_HEADER = (
    "record", "workspace_id", "day", "deployment_id", "template", "run_status",
    "running_seconds", "running_amount", "extensions", "extension_amount", "amount", "runs",
    # ``overrun`` records (the lifetime guard): running_seconds and running_amount are the time
    # past the lifetime end that day and its charge, amount the part of it billed.
    "sandbox_id", "lifetime_end",
)


def _amounts(running_us: int, running: Fraction, extensions: int, extension: Fraction) -> dict[str, Any]:
    return {
        "running_seconds": format_seconds(running_us),
        "running_amount": format_money(round_micro(running)),
        "extensions": extensions,
        "extension_amount": format_money(round_micro(extension)),
        "amount": format_money(round_micro(running + extension)),
    }


def build_content(
    report_id: str, workspace_id: str, start: int, end: int,
    buckets: Mapping[GroupKey, Bucket], runs: Mapping[str, int], carried: Mapping[str, int] | None = None,
    overruns: Sequence[OverrunPiece] = (),
) -> dict[str, Any]:
    """``buckets`` grouped by (deployment, template), as usage.compute.aggregate returns them;
    ``carried``: invoices.credit.carried_on_day (credit carried forward from negative subtotals)."""
    items = []
    for key, bucket in buckets.items():
        named = dict(key)
        items.append({"deployment_id": named["deployment_id"], "template": named["template"],
                      **_amounts(bucket.running_us, bucket.running, bucket.extensions, bucket.extension)})
    all_buckets = list(buckets.values())
    totals = _amounts(
        sum(b.running_us for b in all_buckets),
        sum((b.running for b in all_buckets), Fraction(0)),
        sum(b.extensions for b in all_buckets),
        sum((b.extension for b in all_buckets), Fraction(0)),
    )
    return {
        "id": report_id,
        "kind": KIND,
        "workspace_id": workspace_id,
        "day": day_name(start),
        "start": format_time(start),
        "end": format_time(end),
        "currency": "USD",
        "items": items,
        "totals": totals,
        "runs": {status: runs.get(status, 0) for status in RUN_STATUSES},
        "carried_credit": {name: format_money(amount) for name, amount in (carried or {}).items()},
        "overruns": [{
            "deployment_id": o.interval.deployment_id, "sandbox_id": o.interval.sandbox_id,
            "template": o.interval.template, "started": format_time(o.interval.start),
            "lifetime_end": format_time(o.interval.lifetime_end or 0),
            "start": format_time(o.start), "end": format_time(o.end),
            "overrun_seconds": format_seconds(o.end - o.start),
            "overrun_amount": format_money(round_micro(o.amount)),
            "billed_amount": format_money(round_micro(o.billed)),
        } for o in overruns],
    }


def render_json(content: Mapping[str, Any]) -> bytes:
    return msgspec.json.format(msgspec.json.encode(content), indent=2) + b"\n"


def render_csv(content: Mapping[str, Any]) -> bytes:
    """RFC 4180 with a header row: a ``usage`` row per item, a ``total`` row, a ``runs`` row per status,
    and a ``carried_credit`` row (its amount: the carried credit at the end of the day)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    ws, day = content["workspace_id"], content["day"]

    def money_cols(a: Mapping[str, Any]) -> list[Any]:
        return [a["running_seconds"], a["running_amount"], a["extensions"], a["extension_amount"], a["amount"]]

    for item in content["items"]:
        writer.writerow(["usage", ws, day, item["deployment_id"], item["template"], "", *money_cols(item), "", "", ""])
    writer.writerow(["total", ws, day, "", "", "", *money_cols(content["totals"]), "", "", ""])
    for status, count in content["runs"].items():
        writer.writerow(["runs", ws, day, "", "", status, "", "", "", "", "", count, "", ""])
    if content.get("carried_credit"):
        writer.writerow(["carried_credit", ws, day, "", "", "", "", "", "", "", content["carried_credit"]["balance"], "",
                         "", ""])
    for o in content.get("overruns", ()):
        writer.writerow(["overrun", ws, day, o["deployment_id"], o["template"], "", o["overrun_seconds"],
                         o["overrun_amount"], "", "", o["billed_amount"], "", o["sandbox_id"], o["lifetime_end"]])
    return out.getvalue().encode()
