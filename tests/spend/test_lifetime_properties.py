"""Random lifecycles with ``bill_beyond = false``: the billed running time and the overruns
equal a naive computation of lifetimes, minute by minute, whatever the arrival order."""

import itertools
import random
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings
from hypothesis import strategies as st

from tests.conftest import ADMIN_TOKEN
from tests.factories import BATCH, event

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BASE_MIN = 29_538_000 + 20 * 1440  # 2026-03-20T12:00:00Z in minutes since the epoch
SPAN = 240
TOLERANCE = 5
RANK = {"sandbox.running": 1, "sandbox.extended": 2, "sandbox.stopped": 3, "sandbox.terminated": 4}
counter = itertools.count()


def iso(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def lifetimes(events: list[tuple]) -> list[tuple[int, int | None, int]]:
    """The naive oracle: (start, end or None, lifetime end) of each running interval, in
    minutes, replaying the events in the contract's order."""
    out, start, life = [], None, 0
    for type_, minute, minutes, _ in sorted(events, key=lambda e: (e[1], RANK[e[0]], e[3])):
        if type_ == "sandbox.running" and start is None:
            start, life = minute, minute + 15
        elif type_ == "sandbox.extended" and start is not None:
            life += minutes
        elif type_ in ("sandbox.stopped", "sandbox.terminated"):
            if start is not None and minute > start:
                out.append((start, minute, life))
            start = None
            if type_ == "sandbox.terminated":
                return out
    if start is not None:
        out.append((start, None, life))
    return out


@pytest.fixture
def settings(spend_settings):
    return spend_settings(lifetime={"bill_beyond": False, "tolerance_seconds": TOLERANCE * 60})


lifecycle = st.lists(st.tuples(st.sampled_from(list(RANK)), st.integers(0, SPAN - 1), st.sampled_from([15, 30, 45])),
                     min_size=1, max_size=10)


@hyp_settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(sandboxes=st.lists(lifecycle, min_size=1, max_size=3), seed=st.integers(0, 2**32), as_of=st.integers(1, SPAN))
async def test_billed_time_and_overruns_follow_the_lifetimes(client, sandboxes, seed, as_of):
    ws = f"ws_p{next(counter)}"
    posted, expected_minutes, expected_overruns = [], 0, set()
    for i, events in enumerate(sandboxes):
        tagged = [(t, BASE_MIN + m, n, f"{ws}_{i}_{j}") for j, (t, m, n) in enumerate(events)]
        for t, m, n, eid in tagged:
            posted.append(event(t, iso(m), workspace_id=ws, sandbox_id=f"sb_{i}", id=eid,
                                minutes=n if t == "sandbox.extended" else None))
        for start, end, life in lifetimes(tagged):
            stop = end if end is not None else BASE_MIN + as_of  # as_of stops only open intervals
            expected_minutes += max(0, min(stop, life + TOLERANCE) - start)
            running_at = start <= BASE_MIN + as_of and (end is None or end > BASE_MIN + as_of)
            if running_at and BASE_MIN + as_of - life > TOLERANCE:
                expected_overruns.add((f"sb_{i}", iso(start), iso(life)))
    random.Random(seed).shuffle(posted)
    cut = random.Random(seed).randint(0, len(posted))
    for batch in (posted[:cut], posted[cut:]):
        if batch:
            assert (await client.post("/v1/events", json=batch, headers={**ADMIN, **BATCH})).status_code == 202
    usage = (await client.get(f"/v1/workspaces/{ws}/usage", headers=ADMIN, params={
        "start": iso(BASE_MIN), "end": iso(BASE_MIN + SPAN), "as_of": iso(BASE_MIN + as_of)})).json()
    found = (await client.get("/v1/sandboxes/overruns", headers=ADMIN, params={
        "workspace_id": ws, "as_of": iso(BASE_MIN + as_of)})).json()["items"]
    seconds = sum(int(item["running_seconds"].split(".")[0]) for item in usage["items"])
    assert seconds == expected_minutes * 60, (sorted((e["time"], e["type"], e["data"]["sandbox_id"], e["data"].get("minutes")) for e in posted), as_of, usage)
    assert {(o["sandbox_id"], o["started"], o["lifetime_end"]) for o in found} == expected_overruns
