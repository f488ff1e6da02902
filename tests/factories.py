"""Builders for CloudEvents as the platform sends them."""

from __future__ import annotations

import itertools
from typing import Any

_ids = itertools.count(1)

SANDBOX_FIELDS = ("workspace_id", "deployment_id", "sandbox_id")


def event(
    type_: str,
    time: str,
    *,
    workspace_id: str = "ws_1",
    deployment_id: str = "dep_1",
    sandbox_id: str | None = "sb_1",
    template: str | None = "giga-mini",
    minutes: int | None = None,
    run_id: str | None = None,
    id: str | None = None,
    source: str = "/platform/sandboxes",
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {"workspace_id": workspace_id, "deployment_id": deployment_id}
    if sandbox_id is not None:
        data["sandbox_id"] = sandbox_id
    if type_ in ("sandbox.provisioning", "sandbox.running", "sandbox.extended") and template is not None:
        data["template"] = template
    if minutes is not None:
        data["minutes"] = minutes
    if run_id is not None:
        data["run_id"] = run_id
    return {
        "specversion": "1.0",
        "id": id or f"evt_{next(_ids)}",
        "source": source,
        "type": type_,
        "time": time,
        "data": data,
        **extra,
    }


BATCH = {"Content-Type": "application/cloudevents-batch+json"}
SINGLE = {"Content-Type": "application/cloudevents+json"}
