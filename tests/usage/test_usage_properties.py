"""Random lifecycles through the real API give the oracle's usage, to the micro-dollar.

The oracle is deliberately naive: events on a one-minute grid, and for every minute it
asks "is the sandbox running, with which template?" by replaying the events in the
contract's order, then adds that minute's price.  Arrival order, duplicates, split
batches, a price change and month/day window boundaries must not change the result.
"""

import functools
import itertools
import random
from collections import defaultdict
from datetime import datetime, timezone
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import BATCH, event

BASE_MIN = 29_538_000  # 2026-02-28T12:00:00Z in minutes since the epoch
SPAN_MIN = 3 * 24 * 60  # crosses the month end (Mar 1 00:00) and the price change (Mar 1 12:00)
CHANGE_MIN = BASE_MIN + 24 * 60
RANK = {"sandbox.provisioning": 0, "sandbox.running": 1, "sandbox.extended": 2,
        "sandbox.stopped": 3, "sandbox.terminated": 4}
HOURLY = {  # cents per hour before / after the change (tests/usage/conftest.py)
    "giga-mini": (10, 13), "giga-pro": (40, 37),
}
EXTENSION = {"giga-mini": (25_000, 30_000), "giga-pro": (100_000, 110_000)}  # micro-dollars
counter = itertools.count()


@functools.cache
def iso(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


lifecycle = st.lists(
    st.tuples(
        st.sampled_from(list(RANK)),
        st.integers(0, SPAN_MIN),
        st.sampled_from(sorted(HOURLY)),
        st.sampled_from([15, 30, 45]),
    ),
    min_size=1,
    max_size=12,
)


def oracle(sandboxes: dict[str, list[tuple]]) -> dict[tuple[str, str], Fraction]:
    """Exact micro-dollars per (template, day) window."""
    out: dict[tuple[str, str], Fraction] = defaultdict(Fraction)
    for events in sandboxes.values():
        order = sorted(events, key=lambda e: (e[1], RANK[e[0]], e[4]))
        term = next((e for e in order if e[0] == "sandbox.terminated"), None)
        live = order if term is None else order[: order.index(term) + 1]
        for type_, minute, template, minutes, _ in live:
            if type_ == "sandbox.extended":
                price = EXTENSION[template][minute >= CHANGE_MIN]
                out[(template, iso(minute - minute % 1440))] += price * (minutes // 15)
        for minute in range(BASE_MIN, BASE_MIN + SPAN_MIN + 1):
            running, template = False, None
            for type_, when, tmpl, _, _ in live:
                if when > minute:
                    break
                if type_ == "sandbox.running" and not running:
                    running, template = True, tmpl
                elif type_ in ("sandbox.stopped", "sandbox.terminated"):
                    running = False
            if running:
                cents = HOURLY[template][minute >= CHANGE_MIN]
                out[(template, iso(minute - minute % 1440))] += Fraction(cents * 10_000, 60)
    return out


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    lifecycles=st.lists(lifecycle, min_size=1, max_size=3),
    seed=st.integers(0, 2**32),
    batches=st.integers(1, 4),
    duplicates=st.integers(0, 3),
)
async def test_usage_matches_oracle(client, make_token, lifecycles, seed, batches, duplicates):
    from metering.core.money import format_money, round_micro

    auth = await make_token("events:write", "usage:read")
    ws = f"ws_prop_{next(counter)}"
    sandboxes: dict[str, list[tuple]] = {}
    payload = []
    for n, spec in enumerate(lifecycles):
        sb = f"sb_{n}"
        sandboxes[sb] = []
        for type_, offset, template, minutes in spec:
            minute = BASE_MIN + offset
            ev = event(type_, iso(minute), workspace_id=ws, sandbox_id=sb, template=template,
                       minutes=minutes if type_ == "sandbox.extended" else None)
            sandboxes[sb].append((type_, minute, template, minutes, ev["id"]))
            payload.append(ev)
    # Shuffle, repeat some events, and send in several batches.
    rng = random.Random(seed)
    payload += rng.sample(payload, min(duplicates, len(payload)))
    rng.shuffle(payload)
    cut = sorted(rng.sample(range(1, len(payload)), min(batches - 1, len(payload) - 1))) if len(payload) > 1 else []
    for lo, hi in zip([0, *cut], [*cut, len(payload)]):
        resp = await client.post("/v1/events", json=payload[lo:hi], headers={**auth, **BATCH})
        assert resp.status_code == 202, resp.text

    expected = oracle(sandboxes)
    as_of = iso(BASE_MIN + SPAN_MIN + 1)
    resp = await client.get(f"/v1/workspaces/{ws}/usage", headers=auth, params={
        "start": iso(BASE_MIN - 720), "end": iso(BASE_MIN + SPAN_MIN + 1), "window": "day", "as_of": as_of})
    body = resp.json()
    got = {(i["template"], i["window_start"]): i["amount"] for i in body["items"] if i["amount"] != "0.000000"}
    want = {k: format_money(round_micro(v)) for k, v in expected.items() if round_micro(v) != 0}
    assert got == want
    assert body["total"] == format_money(round_micro(sum(expected.values(), Fraction())))
