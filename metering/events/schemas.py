"""The CloudEvents accepted by ``POST /v1/events`` and their validation rules.

Decoding is msgspec end to end: the body becomes builtins in C, each event is converted
to a typed struct in C, and only the rules msgspec cannot express run in Python.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

import msgspec

ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
SOURCE_MAX = 512

SANDBOX_TYPES = (
    "sandbox.provisioning",
    "sandbox.running",
    "sandbox.extended",
    "sandbox.stopped",
    "sandbox.terminated",
)
RUN_TYPES = ("run.queued", "run.running", "run.completed", "run.failed")
EVENT_TYPES = SANDBOX_TYPES + RUN_TYPES

# The data fields each type requires, beyond workspace_id and deployment_id.
REQUIRED_DATA: dict[str, tuple[str, ...]] = {
    "sandbox.provisioning": ("sandbox_id", "template"),
    "sandbox.running": ("sandbox_id", "template"),
    "sandbox.extended": ("sandbox_id", "template", "minutes"),
    "sandbox.stopped": ("sandbox_id",),
    "sandbox.terminated": ("sandbox_id",),
    "run.queued": ("run_id",),
    "run.running": ("run_id",),
    "run.completed": ("run_id",),
    "run.failed": ("run_id",),
}
ID_FIELDS = ("workspace_id", "deployment_id", "sandbox_id", "run_id")

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class EventData(msgspec.Struct):
    workspace_id: str | None = None
    deployment_id: str | None = None
    sandbox_id: str | None = None
    run_id: str | None = None
    template: str | None = None
    minutes: int | None = None


class CloudEvent(msgspec.Struct):
    specversion: str
    id: str
    source: str
    type: str
    time: AwareDatetime
    data: EventData
    subject: str | None = None
    datacontenttype: str | None = None


class IngestResult(msgspec.Struct):
    accepted: int
    duplicates: int


def path_to_field(path: str) -> str:
    """msgspec's ``$.data.minutes`` / ``$[3].time`` -> ``data.minutes`` / ``time``."""
    path = re.sub(r"^\$(\[\d+\])?\.?", "", path)
    return path or "$"


def split_msgspec_error(message: str) -> tuple[str, str]:
    """Split "Expected `int`, got `str` - at `$.data.minutes`" into message and field."""
    text, sep, where = message.rpartition(" - at `")
    if not sep:
        text, where = message, "$"
    field = path_to_field(where.rstrip("`"))
    missing = re.match(r"Object missing required field `([^`]+)`", text)
    if missing:  # name the missing field itself, not the object that lacks it
        field = missing.group(1) if field == "$" else f"{field}.{missing.group(1)}"
    return text, field


def check_rules(ev: CloudEvent) -> list[tuple[str, str]]:
    """The contract's rules that msgspec's types cannot say; (field, message) pairs."""
    problems: list[tuple[str, str]] = []
    if ev.specversion != "1.0":
        problems.append(("specversion", 'must be "1.0"'))
    if not ID_PATTERN.fullmatch(ev.id):
        problems.append(("id", "must be 1 to 128 characters of A-Z a-z 0-9 _ . : -"))
    if not ev.source or len(ev.source) > SOURCE_MAX or not ev.source.isprintable():
        problems.append(("source", f"must be 1 to {SOURCE_MAX} printable characters"))
    required = REQUIRED_DATA.get(ev.type)
    if required is None:
        problems.append(("type", f"unknown event type {ev.type!r}"))
        return problems
    data = ev.data
    for name in ("workspace_id", "deployment_id", *required):
        if getattr(data, name) is None:
            problems.append((f"data.{name}", "is required"))
    for name in ID_FIELDS:
        value = getattr(data, name)
        if value is not None and not ID_PATTERN.fullmatch(value):
            problems.append((f"data.{name}", "must be 1 to 128 characters of A-Z a-z 0-9 _ . : -"))
    if "minutes" in required and data.minutes is not None:
        if data.minutes <= 0 or data.minutes % 15:
            problems.append(("data.minutes", "must be a positive multiple of 15"))
    if ev.subject is not None and ev.type in SANDBOX_TYPES and ev.subject != data.sandbox_id:
        problems.append(("subject", "must equal data.sandbox_id"))
    return problems
