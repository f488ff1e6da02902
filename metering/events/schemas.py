"""The CloudEvents accepted by ``POST /v1/events`` and their validation rules.

Decoding is msgspec end to end: a valid batch goes from bytes to typed structs in C
(``CloudEvent``, and ``WireEvent`` for the payload as sent), and only the rules msgspec
cannot express run in Python (``RuleCheck`` for the verdict, ``check_rules`` for messages).
"""

from __future__ import annotations

import re
from datetime import datetime
from operator import attrgetter
from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

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

# A validated event as a row of the ``events`` table: a plain tuple in this column order,
# inserted as is and read by position by the usage derivation.
EVENT_COLUMNS = (
    "source", "event_id", "type", "time", "workspace_id", "deployment_id", "sandbox_id", "run_id",
    "template", "minutes", "body_hash", "payload", "received_at",
)
SOURCE, EVENT_ID, TYPE, TIME = 0, 1, 2, 3
BODY_HASH = EVENT_COLUMNS.index("body_hash")

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
MAX_MINUTES = 1440  # one extension adds at most a day (CONTRACT 1, Bounds)
# Any type may carry ``minutes``; whatever is stored fits its column and its sums.
Minutes = Annotated[int, msgspec.Meta(ge=0, le=MAX_MINUTES)]


# gc=False: the structs hold only strings, numbers and datetimes (no cycles), so a batch of
# 10,000 does not make the garbage collector run over them again and again.
class EventData(msgspec.Struct, gc=False):
    workspace_id: str | None = None
    deployment_id: str | None = None
    sandbox_id: str | None = None
    run_id: str | None = None
    template: str | None = None
    minutes: Minutes | None = None


class CloudEvent(msgspec.Struct, gc=False):
    specversion: str
    id: str
    source: str
    type: str
    time: AwareDatetime
    data: EventData
    subject: str | None = None
    datacontenttype: str | None = None


class WireData(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """``data`` exactly as sent: absent fields stay UNSET, so re-encoding gives back the same object."""

    workspace_id: str | None | UnsetType = UNSET
    deployment_id: str | None | UnsetType = UNSET
    sandbox_id: str | None | UnsetType = UNSET
    run_id: str | None | UnsetType = UNSET
    template: str | None | UnsetType = UNSET
    minutes: int | None | UnsetType = UNSET


class WireEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """An event exactly as sent (no parsing), for its canonical JSON.

    Encoded with ``order="sorted"`` it is byte for byte the canonical JSON of the same object
    decoded as a dict (tests/api/test_ingest_paths.py), without making 10,000 dicts per batch.
    An attribute not listed here fails the decoding: such a batch takes the dict path.
    """

    specversion: str | UnsetType = UNSET
    id: str | UnsetType = UNSET
    source: str | UnsetType = UNSET
    type: str | UnsetType = UNSET
    time: str | UnsetType = UNSET
    subject: str | None | UnsetType = UNSET
    datacontenttype: str | None | UnsetType = UNSET
    data: WireData | UnsetType = UNSET


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


_REQUIRED_GETTERS = {t: attrgetter("workspace_id", "deployment_id", *names) for t, names in REQUIRED_DATA.items()}
_SANDBOX_TYPE_SET = frozenset(SANDBOX_TYPES)


class RuleCheck:
    """``check_rules(ev) == []`` without building messages: the verdict for the common, valid case.

    Ids and sources repeat across a batch (a workspace, deployment and sandbox per several
    events), so each distinct one is matched once.  Use one instance per batch.
    """

    def __init__(self) -> None:
        self._good_ids: set[str] = set()
        self._good_sources: set[str] = set()

    def passes(self, ev: CloudEvent) -> bool:
        if ev.specversion != "1.0" or not ID_PATTERN.fullmatch(ev.id):
            return False
        source = ev.source
        if source not in self._good_sources:
            if not source or len(source) > SOURCE_MAX or not source.isprintable():
                return False
            self._good_sources.add(source)
        required = _REQUIRED_GETTERS.get(ev.type)
        if required is None:
            return False
        data = ev.data
        if None in required(data):
            return False
        good = self._good_ids
        for value in (data.workspace_id, data.deployment_id, data.sandbox_id, data.run_id):
            if value is not None and value not in good:
                if not ID_PATTERN.fullmatch(value):
                    return False
                good.add(value)
        if ev.type == "sandbox.extended" and (data.minutes <= 0 or data.minutes % 15):  # type: ignore[operator]
            return False
        return ev.subject is None or ev.type not in _SANDBOX_TYPE_SET or ev.subject == data.sandbox_id
