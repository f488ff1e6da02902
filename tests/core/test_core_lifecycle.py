"""Lifecycle events to intervals and extensions (CONTRACT section 4, rules 1-3 and 5)."""

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.core.lifecycle import Extension, Interval, SandboxEvent, derive

MIN = 60_000_000
_counter = iter(range(10**9))


def ev(minute: int, kind: str, template: str | None = "giga-mini", *, minutes: int | None = None,
       source: str = "platform", event_id: str | None = None, dep: str = "d1") -> SandboxEvent:
    if kind in ("stopped", "terminated"):
        template = None  # these events carry no template
    return SandboxEvent(minute * MIN, f"sandbox.{kind}", source,
                        event_id or f"e{next(_counter)}", dep, template, minutes)


def test_running_then_stopped():
    assert derive([ev(0, "provisioning"), ev(1, "running"), ev(91, "stopped")]) == (
        [Interval(1 * MIN, 91 * MIN, "giga-mini", "d1", 16 * MIN)], [])


def test_open_interval_and_restart():
    events = [ev(0, "running"), ev(10, "stopped"), ev(20, "running", "giga-pro", dep="d2")]
    assert derive(events) == ([Interval(0, 10 * MIN, "giga-mini", "d1", 15 * MIN),
                               Interval(20 * MIN, None, "giga-pro", "d2", 35 * MIN)], [])


def test_running_while_running_keeps_the_opening_template():
    events = [ev(0, "running", "giga-mini"), ev(5, "running", "giga-max"), ev(30, "stopped"),
              ev(31, "stopped")]
    assert derive(events) == ([Interval(0, 30 * MIN, "giga-mini", "d1", 15 * MIN)], [])


def test_stopped_while_not_running_changes_nothing():
    assert derive([ev(0, "stopped"), ev(1, "provisioning")]) == ([], [])


def test_events_after_terminated_are_ignored():
    events = [ev(0, "running"), ev(30, "terminated"), ev(40, "running"),
              ev(45, "extended", minutes=15), ev(50, "stopped")]
    assert derive(events) == ([Interval(0, 30 * MIN, "giga-mini", "d1", 15 * MIN)], [])


def test_ties_follow_lifecycle_rank_not_arrival():
    # Same instant: running is applied before stopped, so the interval has zero length and
    # is dropped; the extension (rank 2) comes before terminated (rank 4) and is billed.
    events = [ev(5, "terminated"), ev(5, "extended", minutes=30), ev(5, "stopped"),
              ev(5, "running")]
    assert derive(events) == ([], [Extension(5 * MIN, 2, "giga-mini", "d1")])


def test_extension_counts_and_template():
    events = [ev(0, "running"), ev(3, "extended", "giga-pro", minutes=45, dep="d9")]
    assert derive(events) == ([Interval(0, None, "giga-mini", "d1", 60 * MIN)],
                              [Extension(3 * MIN, 3, "giga-pro", "d9")])


def test_lifetime_end_counts_extensions_while_running_only():
    # 15 minutes from running, plus the extensions inside the interval (the one at the stop's
    # instant too: extended sorts before stopped); one before the restart adds nothing.
    events = [ev(0, "running"), ev(5, "extended", minutes=30), ev(20, "extended", minutes=15), ev(20, "stopped"),
              ev(25, "extended", minutes=45), ev(30, "running")]
    intervals, _ = derive(events)
    assert [i.lifetime_end for i in intervals] == [60 * MIN, 45 * MIN]


def test_duplicates_are_billed_once():
    run, stop = ev(0, "running", event_id="a"), ev(60, "stopped", event_id="b")
    ext = ev(1, "extended", minutes=15, event_id="c")
    assert derive([run, ext, stop, ext, run, stop]) == derive([run, ext, stop])


@pytest.mark.parametrize(
    "bad",
    [SandboxEvent(0, "run.completed", "s", "e", "d"),
     SandboxEvent(0, "sandbox.running", "s", "e", "d", None),
     SandboxEvent(0, "sandbox.extended", "s", "e", "d", "giga-mini", 20),
     SandboxEvent(0, "sandbox.extended", "s", "e", "d", "giga-mini", 0),
     SandboxEvent(0, "sandbox.extended", "s", "e", "d", "giga-mini", None)],
)
def test_invalid_events_are_refused(bad):
    with pytest.raises(ValueError):
        derive([bad])


# --- property tests against an independent state machine ---------------------------------

TYPE_ORDER = ["sandbox.provisioning", "sandbox.running", "sandbox.extended",
              "sandbox.stopped", "sandbox.terminated"]


def oracle(events):
    """Walk instants in order and, at each, the types in lifecycle order: a plain state machine."""
    unique = {}
    for e in events:
        unique.setdefault((e.source, e.event_id), e)
    by_time = defaultdict(list)
    for e in unique.values():
        by_time[e.time].append(e)
    state, since, opener, life = "idle", None, None, None
    intervals, extensions = [], []
    for t in sorted(by_time):
        for kind in TYPE_ORDER:
            for e in sorted((x for x in by_time[t] if x.type == kind),
                            key=lambda x: (x.source, x.event_id)):
                if state == "terminated":
                    continue
                if kind == "sandbox.running" and state != "running":
                    state, since, opener, life = "running", t, e, t + 15 * MIN
                elif kind == "sandbox.extended":
                    extensions.append(Extension(t, e.minutes // 15, e.template, e.deployment_id))
                    if state == "running":  # the paid lifetime grows only while it runs
                        life += e.minutes * MIN
                elif kind in ("sandbox.stopped", "sandbox.terminated"):
                    if state == "running" and t != since:
                        intervals.append(Interval(since, t, opener.template, opener.deployment_id, life))
                    state = "terminated" if kind == "sandbox.terminated" else "stopped"
    if state == "running":
        intervals.append(Interval(since, None, opener.template, opener.deployment_id, life))
    return intervals, extensions


raw_event = st.tuples(
    st.integers(min_value=0, max_value=12),                       # minute: many ties
    st.sampled_from(TYPE_ORDER),
    st.sampled_from(["p1", "p2"]),                                # source
    st.sampled_from(["giga-mini", "giga-pro", "giga-max"]),
    st.sampled_from(["d1", "d2"]),
    st.integers(min_value=1, max_value=4),                        # extension quarters
)


def build(raw):
    out = []
    for i, (minute, kind, source, template, dep, quarters) in enumerate(raw):
        needs_template = kind in ("sandbox.running", "sandbox.extended", "sandbox.provisioning")
        out.append(SandboxEvent(
            minute * MIN, kind, source, f"id{i % 7}-{i}", dep,
            template if needs_template else None,
            15 * quarters if kind == "sandbox.extended" else None,
        ))
    return out


event_lists = st.lists(raw_event, max_size=25).map(build)


@settings(max_examples=300, deadline=None)
@given(event_lists)
def test_derive_matches_oracle(events):
    assert derive(events) == oracle(events)


@settings(max_examples=200, deadline=None)
@given(st.data(), event_lists)
def test_arrival_order_does_not_matter(data, events):
    shuffled = data.draw(st.permutations(events))
    assert derive(shuffled) == derive(events)


@settings(max_examples=200, deadline=None)
@given(st.data(), event_lists)
def test_duplicates_do_not_change_billing(data, events):
    if not events:
        return
    copies = data.draw(st.lists(st.sampled_from(events), max_size=15))
    arrived = data.draw(st.permutations(events + copies))
    assert derive(arrived) == derive(events)


@settings(max_examples=200, deadline=None)
@given(event_lists)
def test_intervals_are_disjoint_and_positive(events):
    intervals, _ = derive(events)
    assert all(i.end is None or i.end > i.start for i in intervals)
    assert all(a.end is not None and a.end <= b.start for a, b in zip(intervals, intervals[1:]))
    assert all(i.end is not None for i in intervals[:-1])
