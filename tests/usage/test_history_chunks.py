"""A sandbox's history in sealed chunks and a short tail (usage.derive, issue 18).

Whatever the chunk size, the arrival order and the split into batches, a sandbox's usage
rows are what core.lifecycle.derive makes of all its events, and its stored history (its
chunks in order, then the tail in its state row) is each event once, in fold order.  And
an event in order rewrites a bounded tail, however long the sandbox has lived.
"""

import itertools
import random
from functools import partial

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from metering.core.lifecycle import SandboxEvent, derive
from metering.core.timeutil import format_time
from metering.events.service import parse_events, prepare, write_group
from metering.usage import derive as usage_derive
from metering.usage.derive import USAGE_DERIVATION, parse_history
from tests.factories import event

BASE_US = 1_770_000_000_000_000  # 2026-02-02T02:40:00Z: every interval stays inside February
MINUTE = 60_000_000
TYPES = ("sandbox.provisioning", "sandbox.running", "sandbox.extended", "sandbox.stopped", "sandbox.terminated")
serial = itertools.count()


def _events(sandbox: str, spec: list[tuple[str, int, str]]) -> list[dict]:
    return [event(type_, format_time(BASE_US + minute * MINUTE), id=f"{sandbox}_{n}", sandbox_id=sandbox,
                  template=template, minutes=15 if type_ == "sandbox.extended" else None)
            for n, (type_, minute, template) in enumerate(spec)]


async def _write(db, events: list[dict]) -> None:
    rows = parse_events(msgspec.json.encode(events), batch=True, max_events=1_000,
                        template_known=lambda t, u: True, latest_us=2**62, received_us=0)
    async with db.write() as session:
        conn = await session.connection()
        await conn.run_sync(partial(write_group, batches=[prepare(rows)],
                                    derivation=USAGE_DERIVATION))


async def _stored(db, sandbox: str):
    async with db.read() as session:
        q = partial(session.execute, params={"sb": sandbox})
        intervals = (await q(text('SELECT template, start, "end", lifetime_end FROM usage_intervals '
                                  "WHERE sandbox_id = :sb ORDER BY start"))).all()
        extensions = (await q(text("SELECT template, time, count FROM usage_extensions WHERE sandbox_id = :sb "
                                   "ORDER BY time"))).all()
        chunks = (await q(text("SELECT seq, events FROM sandbox_history_chunks WHERE sandbox_id = :sb "
                               "ORDER BY seq"))).all()
        state = (await q(text("SELECT history, history_events, history_chunks FROM sandbox_states "
                              "WHERE sandbox_id = :sb"))).one()
    return [tuple(r) for r in intervals], [tuple(r) for r in extensions], chunks, state


def _as_sandbox_events(spec, sandbox):
    return [SandboxEvent(BASE_US + minute * MINUTE, type_, "/platform/sandboxes", f"{sandbox}_{n}", "dep_1",
                         template if type_ in TYPES[:3] else None, 15 if type_ == "sandbox.extended" else None)
            for n, (type_, minute, template) in enumerate(spec)]


def _lifetime_ends(spec) -> dict[int, int]:
    """Each interval's start -> its lifetime end: 15 minutes, plus 15 for each extension
    while it is open (CONTRACT 10), computed on its own."""
    ends, start, terminated = {}, None, False
    for minute, rank, _, type_ in sorted((m, TYPES.index(t), n, t) for n, (t, m, _) in enumerate(spec)):
        if terminated:
            break
        if type_ == "sandbox.running" and start is None:
            start, end = minute, minute + 15
        elif type_ == "sandbox.extended" and start is not None:
            end += 15
        elif type_ in ("sandbox.stopped", "sandbox.terminated"):
            if start is not None and minute > start:
                ends[BASE_US + start * MINUTE] = BASE_US + end * MINUTE
            start, terminated = None, type_ == "sandbox.terminated"
    if start is not None:
        ends[BASE_US + start * MINUTE] = BASE_US + end * MINUTE
    return ends


lifecycle = st.lists(st.tuples(st.sampled_from(TYPES), st.integers(0, 600), st.sampled_from(["giga-mini", "giga-pro"])),
                     min_size=1, max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec=lifecycle, seed=st.integers(0, 2**32), batches=st.integers(1, 8), chunk=st.integers(1, 4),
       repeats=st.integers(0, 3), in_order=st.booleans())
async def test_any_arrival_gives_the_usage_and_history_of_all_events(db, monkeypatch, spec, seed, batches, chunk,
                                                                      repeats, in_order):
    monkeypatch.setattr(usage_derive, "HISTORY_CHUNK", chunk)
    sandbox = f"sb_chunks_{next(serial)}"
    events = _events(sandbox, spec)
    rng = random.Random(seed)
    sent = events + rng.sample(events, min(repeats, len(events)))
    if in_order:
        sent.sort(key=lambda e: (e["time"], TYPES.index(e["type"]), e["id"]))
    else:
        rng.shuffle(sent)
    cuts = sorted(rng.sample(range(1, len(sent)), min(batches - 1, len(sent) - 1))) if len(sent) > 1 else []
    for lo, hi in zip([0, *cuts], [*cuts, len(sent)]):
        await _write(db, sent[lo:hi])

    intervals, extensions = derive(_as_sandbox_events(spec, sandbox))
    got_intervals, got_extensions, chunks, (tail, tail_events, n_chunks) = await _stored(db, sandbox)
    assert [row[:3] for row in got_intervals] == [(iv.template, iv.start, iv.end) for iv in intervals]
    assert {row[1]: row[3] for row in got_intervals} == _lifetime_ends(spec)
    assert got_extensions == [(x.template, x.time, x.count) for x in extensions]
    history = [e for _, part in chunks for e in parse_history(part)] + parse_history(tail)
    in_fold_order = sorted((BASE_US + m * MINUTE, TYPES.index(t), f"{sandbox}_{n}") for n, (t, m, _) in enumerate(spec))
    assert [(e[0], e[1], e[3]) for e in history] == in_fold_order
    assert [seq for seq, _ in chunks] == list(range(n_chunks))
    assert tail_events == len(parse_history(tail))


async def test_an_event_in_order_rewrites_a_bounded_tail(db):
    """200 events in order, one batch each: the tail never passes HISTORY_CHUNK events, the
    rest is sealed in chunks of that size."""
    spec = [("sandbox.running", 0, "giga-mini")] + [("sandbox.extended", 15 * k, "giga-mini") for k in range(1, 200)]
    events = _events("sb_long", spec)
    tails = []
    for e in events:
        await _write(db, [e])
        *_, (tail, tail_events, _) = await _stored(db, "sb_long")
        tails.append(tail_events)
    assert max(tails) == usage_derive.HISTORY_CHUNK
    intervals, extensions, chunks, (tail, tail_events, n_chunks) = await _stored(db, "sb_long")
    assert len(extensions) == 199
    # Still open, extended in place 199 times: 15 minutes, and 15 more for each extension.
    assert intervals == [("giga-mini", BASE_US, None, BASE_US + 200 * 15 * MINUTE)]
    assert {len(parse_history(part)) for _, part in chunks} == {usage_derive.HISTORY_CHUNK}
    assert n_chunks * usage_derive.HISTORY_CHUNK + tail_events == 200


async def test_a_late_event_keeps_the_chunks_before_it(db):
    """A late event rewrites the history from the chunk it lands in: earlier chunks stay."""
    spec = [("sandbox.running", 0, "giga-mini")] + [("sandbox.extended", 15 * k, "giga-mini") for k in range(2, 60, 2)]
    for e in _events("sb_late", spec):
        await _write(db, [e])
    _, _, before, _ = await _stored(db, "sb_late")
    late = event("sandbox.extended", format_time(BASE_US + 15 * 41 * MINUTE), id="sb_late_x", sandbox_id="sb_late",
                 minutes=15)
    await _write(db, [late])
    _, extensions, after, (tail, _, n_chunks) = await _stored(db, "sb_late")
    assert len(extensions) == len(spec)  # the 29 in order and the late one
    kept = [c for c in before if parse_history(c[1])[-1][0] < BASE_US + 15 * 41 * MINUTE]
    assert 0 < len(kept) < len(before)
    assert after[:len(kept)] == kept and n_chunks == len(kept)
    rewritten = [e for _, part in before[len(kept):] for e in parse_history(part)]
    assert parse_history(tail)[0] == rewritten[0] and "sb_late_x" in [e[3] for e in parse_history(tail)]


async def test_a_late_event_beside_an_earlier_one_at_the_same_time_keeps_both(db):
    """Usage rows are replaced by key (workspace, time, sandbox): a late extension between two
    stored ones of the same minute replaces the rows of that key, and the one that sorts
    before it (whose fold is not redone) goes back in with them."""
    spec = [("sandbox.running", 0, "giga-mini"), ("sandbox.extended", 30, "giga-mini"),
            ("sandbox.extended", 30, "giga-mini"), ("sandbox.stopped", 120, "giga-mini")]
    events = _events("sb_same", spec)
    await _write(db, events)
    late = event("sandbox.extended", format_time(BASE_US + 30 * MINUTE), id="sb_same_1a", sandbox_id="sb_same",
                 template="giga-mini", minutes=15)  # between sb_same_1 and sb_same_2
    await _write(db, [late])
    intervals, extensions, _, _ = await _stored(db, "sb_same")
    assert extensions == [("giga-mini", BASE_US + 30 * MINUTE, 1)] * 3
    assert intervals == [("giga-mini", BASE_US, BASE_US + 120 * MINUTE, BASE_US + 60 * MINUTE)]


async def test_a_late_extension_equal_to_a_stored_one_marks_its_day_changed(db):
    """Two extensions of one sandbox at the same minute, template and deployment make equal
    usage rows.  The second, arriving late after its day was billed, still adds a row, and
    its day must be marked changed (a new version) for billing to pick it up.  Compared as
    sets, the rows before and after looked the same, and the period was never billed again
    (seen in the late-usage property test, whose event ids are random)."""
    stored = event("sandbox.extended", format_time(BASE_US + 30 * MINUTE), id="sb_eq_2", sandbox_id="sb_eq",
                   minutes=15)
    late = {**stored, "id": "sb_eq_1"}  # sorts before the stored one: it is re-derived
    versions = []
    for events in ([stored], [late]):
        await _write(db, events)
        async with db.read() as session:
            versions.append((await session.execute(text(
                "SELECT version FROM usage_changed_days WHERE workspace_id = 'ws_1' AND day = :day"),
                {"day": BASE_US - BASE_US % (24 * 60 * MINUTE)})).scalar_one())
    _, extensions, _, _ = await _stored(db, "sb_eq")
    assert extensions == [("giga-mini", BASE_US + 30 * MINUTE, 1)] * 2
    assert versions[1] == versions[0] + 1
