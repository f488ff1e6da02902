"""The ingest fast paths give the same answers as the plain ones.

- The struct-decoded canonical payload is byte for byte the dict-decoded one (the hash that
  tells a repeat from a conflict must not change with the path an event took).
- Several requests committed together (group commit) keep their own all-or-nothing,
  repeats and conflicts.
- Migration 0006 fills sandbox_states from the events already stored.
"""

from functools import partial

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from metering.errors import Conflict
from metering.events.schemas import WireEvent
from metering.events.service import parse_events, write_group
from metering.usage.derive import after_insert
from tests.factories import event

T0 = "2026-01-01T00:00:00Z"
canonical = msgspec.json.Encoder(order="sorted")
text_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    optional=st.dictionaries(st.sampled_from(["subject", "datacontenttype"]), st.none() | text_values),
    data=st.dictionaries(st.sampled_from(["workspace_id", "deployment_id", "sandbox_id", "run_id", "template"]),
                         st.none() | text_values),
    minutes=st.none() | st.integers(-2**63, 2**63 - 1) | st.just("absent"),
    keys_reversed=st.booleans(),
)
def test_wire_struct_gives_the_dict_canonical_json(optional, data, minutes, keys_reversed):
    ev = {"specversion": "1.0", "id": "e\u00e9\"\\", "source": "/s", "type": "sandbox.running", "time": T0,
          **optional, "data": dict(data)}
    if minutes != "absent":
        ev["data"]["minutes"] = minutes
    if keys_reversed:
        ev = dict(reversed(list(ev.items())))
    body = msgspec.json.encode(ev)
    assert canonical.encode(msgspec.json.decode(body, type=WireEvent)) == canonical.encode(msgspec.json.decode(body))


def test_unknown_attributes_take_the_dict_path_and_are_kept():
    ev = {**event("sandbox.running", T0), "traceparent": "00-abc"}
    rows = parse_events(msgspec.json.encode(ev), batch=False, max_events=1, template_known=lambda t, u: True,
                        latest_us=2**62, received_us=0)
    assert '"traceparent":"00-abc"' in rows[0][-2]


def _rows(*events):
    return parse_events(msgspec.json.encode(list(events)), batch=True, max_events=100,
                        template_known=lambda t, u: True, latest_us=2**62, received_us=0)


async def _write(db, batches):
    async with db.write() as session:
        conn = await session.connection()
        return await conn.run_sync(partial(write_group, batches=batches, after_insert=after_insert))


async def _count(db, table):
    async with db.read() as session:
        return (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()


async def test_group_keeps_each_request_all_or_nothing(db):
    stored = event("sandbox.running", T0, id="evt_stored", sandbox_id="sb_a")
    await _write(db, [_rows(stored)])
    a = _rows(event("sandbox.stopped", "2026-01-01T01:00:00Z", sandbox_id="sb_a"))
    repeat = _rows(stored, event("sandbox.running", T0, sandbox_id="sb_b"))
    clash = _rows({**stored, "time": "2026-01-01T00:00:05Z"}, event("sandbox.running", T0, sandbox_id="sb_c"))
    inner = _rows(event("sandbox.running", T0, id="evt_x", sandbox_id="sb_d"),
                  event("sandbox.running", T0, id="evt_x", sandbox_id="sb_d", template="giga-pro"))
    outcomes = await _write(db, [a, repeat, clash, inner])
    assert [type(o).__name__ for o in outcomes] == ["IngestResult", "IngestResult", "Conflict", "Conflict"]
    assert (outcomes[0].accepted, outcomes[0].duplicates) == (1, 0)
    assert (outcomes[1].accepted, outcomes[1].duplicates) == (1, 1)
    assert outcomes[2].errors[0]["index"] == 0 and outcomes[3].errors[0]["index"] == 1
    assert await _count(db, "events") == 3
    async with db.read() as session:
        rows = (await session.execute(text('SELECT sandbox_id, "end" IS NULL FROM usage_intervals ORDER BY 1'))).all()
    assert [tuple(r) for r in rows] == [("sb_a", False), ("sb_b", True)]


async def test_requests_sharing_a_key_go_one_after_the_other(db):
    shared = event("sandbox.running", T0, id="evt_shared", sandbox_id="sb_s")
    changed = {**shared, "time": "2026-01-01T00:00:09Z"}
    outcomes = await _write(db, [_rows(shared), _rows(shared, event("sandbox.stopped", "2026-01-01T02:00:00Z",
                                                                    sandbox_id="sb_s")), _rows(changed)])
    assert (outcomes[0].accepted, outcomes[1].accepted, outcomes[1].duplicates) == (1, 1, 1)
    assert isinstance(outcomes[2], Conflict)
    assert await _count(db, "events") == 2
    assert await _count(db, "usage_intervals") == 1


async def test_single_request_conflict_is_raised(db):
    await _write(db, [_rows(event("sandbox.running", T0, id="evt_1"))])
    with pytest.raises(Conflict):
        await _write(db, [_rows(event("sandbox.running", "2026-01-01T00:00:01Z", id="evt_1"))])


def test_migration_fills_sandbox_states(tmp_path):
    import sqlite3

    from metering.migrate import upgrade

    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0005")
    conn = sqlite3.connect(tmp_path / "m.db")
    insert = ("INSERT INTO events (source, event_id, type, time, workspace_id, deployment_id, sandbox_id, template, "
              "body_hash, payload, received_at) VALUES ('/s', ?, ?, ?, 'ws', 'dep', ?, ?, '', '{}', 0)")
    conn.executemany(insert, [
        ("e1", "sandbox.running", 100, "sb_open", "giga-mini"),
        ("e2", "sandbox.stopped", 50, "sb_closed", None),  # before its running: changes nothing
        ("e3", "sandbox.running", 10, "sb_closed", "giga-pro"),
        ("e4", "sandbox.terminated", 60, "sb_closed", None),
        ("e5", "run.completed", 70, None, None),
    ])
    conn.commit()
    upgrade(url)
    states = conn.execute("SELECT sandbox_id, last_time, last_rank, last_event_id, open_start, open_template, "
                          "terminated FROM sandbox_states ORDER BY sandbox_id").fetchall()
    assert states == [("sb_closed", 60, 4, "e4", None, None, 1), ("sb_open", 100, 1, "e1", 100, "giga-mini", 0)]
    conn.close()
