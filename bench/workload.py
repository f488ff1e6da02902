"""Synthetic lifecycle events, as the platform would send them.

Every sandbox gets four events in one batch: provisioning, running, extended (15 minutes)
and stopped (one in eight is terminated instead), a few minutes to a few hours apart.
Batches are deterministic for a seed, so every run and every engine sees the same events.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timezone

import msgspec

from metering.core.timeutil import format_time, to_us

TEMPLATES = ("giga-mini", "giga-standard", "giga-pro", "giga-max", "linux-toolkit-standard")
SOURCE = "/platform/sandboxes"
BASE_US = to_us(datetime(2026, 1, 1, tzinfo=timezone.utc))
SECOND = 1_000_000


def sandbox_events(ws: str, sb: str, start_us: int, rng: random.Random) -> list[dict]:
    """The four events of one sandbox's short life."""
    template = rng.choice(TEMPLATES)
    dep = f"dep_{sb}"
    data = {"workspace_id": ws, "deployment_id": dep, "sandbox_id": sb, "template": template}
    running = start_us + rng.randrange(5, 60) * SECOND
    stop = running + rng.randrange(60, 4 * 3600) * SECOND
    last = "sandbox.terminated" if rng.random() < 0.125 else "sandbox.stopped"
    steps = [
        ("sandbox.provisioning", start_us, data),
        ("sandbox.running", running, data),
        ("sandbox.extended", running + 60 * SECOND, {**data, "minutes": 15}),
        (last, stop, {"workspace_id": ws, "deployment_id": dep, "sandbox_id": sb}),
    ]
    return [
        {"specversion": "1.0", "id": f"evt_{sb}_{n}", "source": SOURCE, "type": type_,
         "time": format_time(t), "subject": sb, "datacontenttype": "application/json", "data": d}
        for n, (type_, t, d) in enumerate(steps)
    ]


def batches(
    n_batches: int, sandboxes_per_batch: int, *, workspaces: int = 100, seed: int = 7,
    prefix: str = "sb", span_us: int = 28 * 24 * 3600 * SECOND, base_us: int = BASE_US,
) -> Iterator[list[dict]]:
    """``n_batches`` lists of ``4 * sandboxes_per_batch`` events, sandboxes never repeating."""
    rng = random.Random(seed)
    serial = 0
    for _ in range(n_batches):
        batch: list[dict] = []
        for _ in range(sandboxes_per_batch):
            ws = f"ws_{rng.randrange(workspaces):05d}"
            start = base_us + rng.randrange(span_us // SECOND) * SECOND
            batch += sandbox_events(ws, f"{prefix}_{serial:08d}", start, rng)
            serial += 1
        yield batch


def encoded_batches(*args, **kwargs) -> list[bytes]:
    """The batches as request bodies, encoded ahead of the timed part."""
    return [msgspec.json.encode(b) for b in batches(*args, **kwargs)]
