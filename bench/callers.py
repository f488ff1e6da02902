"""Event streams in the shapes callers really send (issue 18), deterministic for a seed.

Half the events come from long-lived sandboxes: provisioning, running, then an extension every
15 minutes for hours, then stopped, their events spread over many batches (a few of them
each); the other half from short lives, four events in one batch as in bench.workload.
``late`` of the long sandboxes' events (not their first two) are held back and sent a few
batches after later events of the same sandbox, which makes the service re-derive it.

Times are recent, as a live platform's are: the long lives end about now (their first
events fall in days that have ended, as a caller catching up sends them) and the short
ones lie in the last 20 hours.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Iterator

import msgspec

from bench.workload import SECOND, SOURCE, TEMPLATES, sandbox_events
from metering.core.timeutil import format_time

QUARTER = 15 * 60 * SECOND
LATE_BY = 3  # batches a late event is held back


def long_life(ws: str, sb: str, start_us: int, n_events: int, template: str) -> Iterator[dict]:
    """``n_events`` events of one sandbox: provisioning, running, extensions every 15 minutes, stopped."""
    dep = f"dep_{sb}"
    data = {"workspace_id": ws, "deployment_id": dep, "sandbox_id": sb, "template": template}
    running = start_us + 30 * SECOND
    steps = [("sandbox.provisioning", start_us, data), ("sandbox.running", running, data)]
    steps += [("sandbox.extended", running + k * QUARTER - 60 * SECOND, {**data, "minutes": 15})
              for k in range(1, max(1, n_events - 2))]
    steps.append(("sandbox.stopped", running + max(1, n_events - 2) * QUARTER,
                  {"workspace_id": ws, "deployment_id": dep, "sandbox_id": sb}))
    for n, (type_, t, d) in enumerate(steps[:n_events]):
        yield {"specversion": "1.0", "id": f"evt_{sb}_{n}", "source": SOURCE, "type": type_,
               "time": format_time(t), "subject": sb, "datacontenttype": "application/json", "data": d}


def recent(rng: random.Random, span_us: int) -> int:
    """A whole second in ``[now - span - 1 hour, now - span)``."""
    now = time.time_ns() // 1000
    return (now - span_us - rng.randrange(3600) * SECOND) // SECOND * SECOND


def caller_batches(total: int, batch: int, *, long_events: int = 190, late: float = 0.01, seed: int = 21,
                   prefix: str = "c", workspaces: int = 100, long_share: float = 0.5) -> list[list[dict]]:
    """About ``total`` events in batches of ``batch``: ``long_share`` of them from sandboxes
    with ``long_events`` events each (as many at once as it takes), the rest from short lives."""
    rng = random.Random(seed)
    long_span = long_events * QUARTER
    n_long = max(1, round(total * long_share / long_events)) if long_share else 0
    lives: deque[Iterator[dict]] = deque(
        long_life(f"ws_{rng.randrange(workspaces):05d}", f"{prefix}L{i:06d}",
                  recent(rng, long_span), long_events, rng.choice(TEMPLATES))
        for i in range(n_long))
    short_serial = 0
    short: deque[dict] = deque()  # a short life's events not sent yet (batches smaller than four)
    held: list[tuple[int, dict]] = []  # (due batch, event): late ones
    out: list[list[dict]] = []
    sent = 0
    while sent < total and (lives or long_share < 1):
        current: list[dict] = [e for due, e in held if due <= len(out)]
        held = [(due, e) for due, e in held if due > len(out)]
        while len(current) < batch and sent + len(current) < total:
            if lives and (rng.random() < long_share or not long_share < 1):
                life = lives[0]
                lives.rotate(-1)  # one event of each long sandbox in turn: spread over batches
                event = next(life, None)
                if event is None:
                    lives.remove(life)
                    continue
                if late and not event["id"].endswith(("_0", "_1")) and rng.random() < late:
                    held.append((len(out) + LATE_BY, event))
                    continue
                current.append(event)
            else:
                if not short:
                    ws = f"ws_{rng.randrange(workspaces):05d}"
                    start = recent(rng, 20 * 3600 * SECOND)
                    short.extend(sandbox_events(ws, f"{prefix}S{short_serial:08d}", start, rng))
                    short_serial += 1
                current.append(short.popleft())
        sent += len(current)
        out.append(current)
    if held:
        out.append([e for _, e in held])
    return out


def encoded(batches: list[list[dict]]) -> tuple[list[bytes], list[int]]:
    return [msgspec.json.encode(b) for b in batches], [len(b) for b in batches]
