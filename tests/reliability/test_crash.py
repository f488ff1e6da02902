"""kill -9 at random moments: nothing acknowledged is lost, nothing is counted twice."""

import random
import subprocess
import sys
import threading
import time
from fractions import Fraction

import httpx
import pytest
from sqlalchemy import text

from metering.core.money import format_money, round_micro
from tests.conftest import ADMIN_TOKEN
from tests.factories import BATCH, event
from tests.process import ROOT, ServerProcess

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RANK = {"sandbox.running": 1, "sandbox.extended": 2, "sandbox.stopped": 3, "sandbox.terminated": 4}
JAN_1 = 1_767_225_600  # 2026-01-01T00:00:00Z in seconds


def iso(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def lifecycles(rng: random.Random, workspaces: int, sandboxes: int, per_sandbox: int) -> list[dict]:
    events = []
    for ws in range(workspaces):
        for sb in range(sandboxes):
            for _ in range(per_sandbox):
                kind = rng.choice(list(RANK))
                events.append(event(kind, iso(JAN_1 + rng.randrange(0, 20 * 86400, 60)), workspace_id=f"ws_{ws}",
                                    sandbox_id=f"sb_{ws}_{sb}", minutes=15 if kind == "sandbox.extended" else None))
    rng.shuffle(events)
    return events


def oracle(events: list[dict]) -> dict[str, Fraction]:
    """giga-mini only: $0.10/h running, $0.025 per extension, applied in the contract's order."""
    by_sandbox: dict[tuple, list[dict]] = {}
    for ev in events:
        by_sandbox.setdefault((ev["data"]["workspace_id"], ev["data"]["sandbox_id"]), []).append(ev)
    totals: dict[str, Fraction] = {}
    for (ws, _), evs in by_sandbox.items():
        evs.sort(key=lambda e: (e["time"], RANK[e["type"]], e["source"], e["id"]))
        opened, amount = None, Fraction(0)
        for ev in evs:
            t = int(time.mktime(time.strptime(ev["time"], "%Y-%m-%dT%H:%M:%SZ"))) - time.timezone
            if ev["type"] == "sandbox.running" and opened is None:
                opened = t
            elif ev["type"] == "sandbox.extended":
                amount += Fraction(25_000) * (ev["data"]["minutes"] // 15)
            elif ev["type"] in ("sandbox.stopped", "sandbox.terminated"):
                if opened is not None:
                    amount += Fraction(100_000 * (t - opened), 3600)
                opened = None
                if ev["type"] == "sandbox.terminated":
                    break
        if opened is not None:  # runs until the query's end, 2026-02-01
            amount += Fraction(100_000 * (JAN_1 + 31 * 86400 - opened), 3600)
        totals[ws] = totals.get(ws, Fraction(0)) + amount
    return totals


@pytest.fixture
def server(db_url, db, tmp_path):
    proc = ServerProcess({"METERING_DATABASE_URL": db_url, "METERING_ADMIN_TOKEN": ADMIN_TOKEN,
                          "METERING_SCHEDULER__ENABLED": "false"}, tmp_path / "server.log").start()
    yield proc
    proc.stop()


@pytest.mark.parametrize(("senders", "size"), [(1, 5), (4, 5), (4, 60)])
async def test_kill_minus_9_during_ingest_loses_nothing_acknowledged(server, db, senders, size):
    """With several senders at once, their requests share commits (group commit) and their
    sandboxes' histories grow past a chunk (usage.derive): each 202 still means stored.
    Batches of 60 events go to the SQLite writer ahead of their commit
    (events.service.STAGE_EVENTS): a kill between the two loses them, unacknowledged."""
    rng = random.Random(2026)
    events = lifecycles(rng, workspaces=4, sandboxes=10, per_sandbox=12 * senders * size // 5)
    # Many paced batches: sending them needs more server uptime (96 x 40 ms per sender)
    # than five kills allow (5 x 0.4 s at most), so every kill lands while clients still send.
    batches = [events[i : i + size] for i in range(0, len(events), size)]
    acked: list[list[dict]] = []
    failures = 0

    def send(mine: list[list[dict]]) -> None:  # a client that retries a batch until it is acknowledged
        nonlocal failures
        for batch in mine:
            while True:
                try:
                    resp = httpx.post(f"{server.url}/v1/events", json=batch, headers={**AUTH, **BATCH}, timeout=10)
                except httpx.HTTPError:
                    failures += 1
                    time.sleep(0.05)
                    continue
                if resp.status_code == 202:
                    acked.append(batch)
                    time.sleep(0.03)
                    break
                raise AssertionError(resp.text)

    threads = [threading.Thread(target=send, args=(batches[n::senders],)) for n in range(senders)]
    for sender in threads:
        sender.start()
    kills = 0
    while any(t.is_alive() for t in threads) and kills < 5:
        time.sleep(rng.uniform(0.05, 0.4))
        server.kill()
        kills += 1
        server.start()
    for sender in threads:
        sender.join()
    assert kills == 5 and failures > 0 and len(acked) == len(batches)

    ids = [ev["id"] for batch in acked for ev in batch]
    async with db.read() as session:
        stored = (await session.execute(text("SELECT event_id, count(*) FROM events GROUP BY event_id"))).all()
    assert sorted(ids) == sorted(e for e, _ in stored)
    assert all(n == 1 for _, n in stored)
    for ws, amount in oracle(events).items():
        resp = httpx.get(f"{server.url}/v1/workspaces/{ws}/usage", headers=AUTH, timeout=10, params={
            "start": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00Z", "as_of": "2026-02-01T00:00:00Z"})
        assert resp.json()["total"] == format_money(round_micro(amount)), ws


async def test_kill_minus_9_during_a_billing_run(server, db_url, db):
    rng = random.Random(7)
    events = lifecycles(rng, workspaces=150, sandboxes=1, per_sandbox=4)
    resp = httpx.post(f"{server.url}/v1/events", json=events, headers={**AUTH, **BATCH}, timeout=60)
    assert resp.status_code == 202
    expected = {ws: round_micro(a) for ws, a in oracle(events).items()}
    env = {"METERING_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "metering.cli", "billing", "run",
           "--period-start", "2026-01-01T00:00:00Z", "--period-end", "2026-02-01T00:00:00Z"]
    killed = 0
    for _ in range(4):
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 2.5))
        if proc.poll() is None:
            proc.kill()
            killed += 1
        proc.wait()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    async with db.read() as session:
        rows = (await session.execute(text("SELECT workspace_id, number, total, status FROM invoices"))).all()
    billed = {ws for ws, amount in expected.items() if amount}
    assert sorted(ws for ws, *_ in rows) == sorted(billed)
    assert sorted(n for _, n, _, _ in rows) == [f"INV-{i:06d}" for i in range(1, len(billed) + 1)]
    assert all(status == "finalized" for *_, status in rows)
    assert {ws: total for ws, _, total, _ in rows} == {ws: expected[ws] for ws in billed}
