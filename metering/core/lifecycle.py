"""From one sandbox's lifecycle events to billable running intervals and extensions.

Events are applied in the order of their ``time`` (ties broken by lifecycle rank, then by
``(source, event_id)``), never in the order they arrived, so any arrival order bills the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

EVENT_RANK = {
    "sandbox.provisioning": 0,
    "sandbox.running": 1,
    "sandbox.extended": 2,
    "sandbox.stopped": 3,
    "sandbox.terminated": 4,
}
EXTENSION_MINUTES = 15
MINUTE_US = 60_000_000
# A sandbox lives this long from the running event that opened its interval, plus the minutes
# of each extension while it runs (CONTRACT 10, the lifetime guard).
LIFETIME_US = 15 * MINUTE_US


@dataclass(frozen=True)
class LifetimePolicy:
    """``[lifetime]`` settings: how long past its lifetime end a sandbox may run unnoticed,
    and whether running time past that is billed."""

    tolerance_us: int = 5 * MINUTE_US
    bill_beyond: bool = True


@dataclass(frozen=True)
class SandboxEvent:
    time: int
    type: str
    source: str
    event_id: str
    deployment_id: str
    template: str | None = None
    minutes: int | None = None


@dataclass(frozen=True)
class Interval:
    """A running interval ``[start, end)``; ``end`` None while the sandbox still runs.

    ``lifetime_end``: when its paid lifetime ends, ``LIFETIME_US`` from its start plus the
    minutes of each extension applied while it runs (CONTRACT 10, the lifetime guard).
    """

    start: int
    end: int | None
    template: str
    deployment_id: str
    lifetime_end: int | None = None


@dataclass(frozen=True)
class Extension:
    time: int
    count: int  # number of 15-minute extensions
    template: str
    deployment_id: str


def _order_key(e: SandboxEvent) -> tuple:
    # The trailing fields only matter for conflicting copies of one (source, event_id),
    # which the caller should have refused; they keep even that case arrival-independent.
    return (
        e.time, EVENT_RANK[e.type], e.source, e.event_id,
        e.deployment_id, e.template or "", e.minutes if e.minutes is not None else -1,
    )


def _validate(e: SandboxEvent) -> None:
    if e.type not in EVENT_RANK:
        raise ValueError(f"not a sandbox lifecycle event: {e.type!r}")
    if e.type in ("sandbox.running", "sandbox.extended") and not e.template:
        raise ValueError(f"{e.type} event {e.event_id!r} has no template")
    if e.type == "sandbox.extended":
        m = e.minutes
        if isinstance(m, bool) or not isinstance(m, int) or m <= 0 or m % EXTENSION_MINUTES:
            raise ValueError(f"extension {e.event_id!r}: minutes must be a positive multiple of 15")


def ordered(events: Iterable[SandboxEvent]) -> list[SandboxEvent]:
    """The events deduplicated on ``(source, event_id)`` and in application order."""
    events = list(events)
    for e in events:
        _validate(e)
    seen: set[tuple[str, str]] = set()
    out = []
    for e in sorted(events, key=_order_key):
        if (e.source, e.event_id) not in seen:
            seen.add((e.source, e.event_id))
            out.append(e)
    return out


def _interval(opening: SandboxEvent, end: int | None, lifetime_end: int) -> Interval:
    # Rule 3: the interval keeps the template (and deployment) of the event that opened it.
    assert opening.template is not None
    return Interval(opening.time, end, opening.template, opening.deployment_id, lifetime_end)


def derive(events: Iterable[SandboxEvent]) -> tuple[list[Interval], list[Extension]]:
    """Intervals and extensions of ONE sandbox (CONTRACT section 4, rules 1-3 and 5)."""
    intervals: list[Interval] = []
    extensions: list[Extension] = []
    opened: SandboxEvent | None = None  # the running event of the open interval
    lifetime_end = 0  # the open interval's

    for e in ordered(events):
        if e.type == "sandbox.running":
            if opened is None:
                opened, lifetime_end = e, e.time + LIFETIME_US
        elif e.type == "sandbox.extended":
            assert e.template is not None and e.minutes is not None
            extensions.append(
                Extension(e.time, e.minutes // EXTENSION_MINUTES, e.template, e.deployment_id)
            )
            lifetime_end += e.minutes * MINUTE_US  # meaningful only while an interval is open
        elif e.type in ("sandbox.stopped", "sandbox.terminated"):
            if opened is not None:
                if e.time > opened.time:  # a zero-length interval bills nothing: dropped
                    intervals.append(_interval(opened, e.time, lifetime_end))
                opened = None
            if e.type == "sandbox.terminated":
                break  # final: later events are stored but bill nothing
    if opened is not None:
        intervals.append(_interval(opened, None, lifetime_end))
    return intervals, extensions
