"""Over all invoices, each period's lines add up to its usage, whatever arrives late.

Random lifecycles over three billing periods (month, week or day), events arriving on time
or late after random billing runs of random periods (each at a simulated now), a catch-up
run of every period, more late events, then an ended period billed again.  The oracle replays each sandbox's events in the contract's
order and prices each (period, template, kind) exactly, rounded once: the sum over every
invoice of a period's own lines and of the adjustments for it must equal that, to the
micro-dollar.  Along the way no invoice total is negative, and a finalized invoice never
changes.
"""

import itertools
import random
from collections import defaultdict
from fractions import Fraction

import msgspec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from metering.core.periods import next_boundary, period_bounds
from metering.core.timeutil import format_time, parse_time
from metering.events.service import parse_events, store_batch
from metering.invoices.service import run_billing
from metering.pricing.service import PriceCatalog
from metering.settings import load_settings
from metering.usage.derive import USAGE_DERIVATION
from tests.factories import event

RANK = {"sandbox.running": 1, "sandbox.extended": 2, "sandbox.stopped": 3, "sandbox.terminated": 4}
HOURLY = {"giga-mini": 100_000, "giga-pro": 400_000}  # micro-dollars (config/pricing.toml)
EXTENSION = {"giga-mini": 25_000, "giga-pro": 100_000}
HOUR = 3_600_000_000
examples = itertools.count()
# Examples take periods one after the other, in the past (ingest records changes of ended days)
# and where the price book applies.
FIRST, LAST = parse_time("2020-01-01T00:00:00Z"), parse_time("2026-11-01T00:00:00Z")
CURSOR: dict[str, int] = {}  # per database: where the next example's periods may start


def periods_from(base: int, kind: str, count: int) -> list[tuple[int, int]]:
    out = [period_bounds(base, kind)]
    while len(out) < count:
        out.append((out[-1][1], next_boundary(out[-1][1], kind)))
    return out


def oracle(sandboxes: dict[str, list[tuple]], periods: list[tuple[int, int]]) -> dict[int, int]:
    """Per period start: the sum, over (template, kind), of its exact charge rounded once."""
    exact: dict[tuple[int, str, str], Fraction] = defaultdict(Fraction)
    for events in sandboxes.values():
        opened = None
        for type_, time, template, minutes, _ in sorted(events, key=lambda e: (e[1], RANK[e[0]], e[4])):
            if type_ == "sandbox.extended":
                for start, end in periods:
                    if start <= time < end:
                        exact[(start, template, "extension")] += EXTENSION[template] * (minutes // 15)
            elif type_ == "sandbox.running" and opened is None:
                opened = (time, template)
            elif type_ in ("sandbox.stopped", "sandbox.terminated"):
                if opened is not None:
                    _run(exact, periods, *opened, time)
                opened = None
            if type_ == "sandbox.terminated":
                break
        if opened is not None:  # never stopped: it runs through every period
            _run(exact, periods, *opened, periods[-1][1])
    totals = {start: 0 for start, _ in periods}
    for (start, _, _), amount in exact.items():
        totals[start] += round(amount)  # half to even
    return totals


def _run(exact, periods, begin: int, template: str, end: int) -> None:  # type: ignore[no-untyped-def]
    for start, stop in periods:
        overlap = min(end, stop) - max(begin, start)
        if overlap > 0:
            exact[(start, template, "running")] += Fraction(HOURLY[template] * overlap, HOUR)


async def billed_per_period(db, ws: str) -> dict[int, int]:  # type: ignore[no-untyped-def]
    async with db.read() as session:
        rows = (await session.execute(text(
            "SELECT i.period_start, l.kind, l.original_period_start, l.amount FROM invoice_lines l "
            "JOIN invoices i ON i.id = l.invoice_id WHERE i.status <> 'void' AND i.workspace_id = :ws"), {"ws": ws})).all()
    out: dict[int, int] = defaultdict(int)
    for period_start, kind, original, amount in rows:
        if kind in ("running", "extension"):
            out[period_start] += amount
        elif kind == "adjustment":
            out[original] += amount
    return out


async def snapshot(db, ws: str) -> dict:  # type: ignore[no-untyped-def]
    """The workspace's finalized invoices with their lines; every invoice's total checked."""
    async with db.read() as session:
        invoices = (await session.execute(text(
            "SELECT id, status, number, subtotal, credits, total, carried_forward FROM invoices "
            "WHERE workspace_id = :ws"), {"ws": ws})).all()
        lines = (await session.execute(text(
            "SELECT invoice_id, position, kind, amount, original_period_start FROM invoice_lines "
            "WHERE invoice_id IN (SELECT id FROM invoices WHERE workspace_id = :ws) ORDER BY invoice_id, position"),
            {"ws": ws})).all()
    by_invoice = defaultdict(list)
    for row in lines:
        by_invoice[row[0]].append(tuple(row[1:]))
    for inv in invoices:
        assert inv.total >= 0, inv
        assert inv.total == sum(line[2] for line in by_invoice[inv.id]), inv
        assert inv.total == inv.subtotal - inv.credits + inv.carried_forward, inv
    return {inv.id: (inv.number, inv.total, by_invoice[inv.id]) for inv in invoices if inv.status != "draft"}


lifecycle = st.lists(
    st.tuples(st.sampled_from(list(RANK)), st.integers(0, 10**6), st.sampled_from(sorted(HOURLY)),
              st.sampled_from([15, 30])),
    min_size=1, max_size=6,
)


# No shrinking: each example takes a while, and a failure prints its inputs as generated.
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])
@given(
    kind=st.sampled_from(["month", "week", "day"]),
    lifecycles=st.lists(lifecycle, min_size=1, max_size=3),
    runs=st.lists(st.tuples(st.integers(0, 10**6 - 1), st.integers(0, 2)), max_size=3),
    seed=st.integers(0, 2**32),
)
async def test_each_period_bills_its_usage_whatever_arrives_late(db, db_url, tmp_path, kind, lifecycles, runs, seed):
    # Each example on periods of its own (a period is closed for every workspace at once), and
    # a workspace of its own with the earlier examples' usage gone (emptying every table takes
    # longer than an example, and finalized invoices cannot be deleted).
    async with db.write() as session:
        for table in ("usage_changed_days", "usage_intervals", "usage_extensions", "sandbox_states"):
            await session.execute(text(f"DELETE FROM {table}"))
    n = next(examples)
    periods = periods_from(next_boundary(CURSOR.get(db_url, FIRST), kind), kind, 4)
    CURSOR[db_url] = periods[-1][1]
    assert periods[-1][1] < LAST, "out of fresh periods"
    conf = load_settings(environ={}, database_url=db_url, reports_dir=str(tmp_path), scheduler={"enabled": False},
                         billing={"period": kind})
    prices = PriceCatalog.from_file(conf.pricing_file)
    # Events in the first three periods; the fourth is "now" at the end.
    span = periods[2][1] - periods[0][0]
    rng = random.Random(seed)
    ws = f"ws_{n}"
    sandboxes: dict[str, list[tuple]] = {}
    # Billing runs at random times, of the period then current or one before it (ticks, operators).
    ticks = []
    for offset, back in sorted(runs):
        now = periods[0][0] + offset * (periods[3][1] - periods[0][0]) // 10**6
        current = next(i for i, (start, end) in enumerate(periods) if start <= now < end)
        ticks.append((now, max(current - back, 0)))
    arrivals: dict[int, list[dict]] = defaultdict(list)  # tick index: events stored just before it
    for k, spec in enumerate(lifecycles):
        sb = f"sb_{k}"
        sandboxes[sb] = []
        for type_, offset, template, minutes in spec:
            time = periods[0][0] + offset * span // 10**6
            ev = event(type_, format_time(time), workspace_id=ws, sandbox_id=sb, template=template,
                       minutes=minutes if type_ == "sandbox.extended" else None)
            sandboxes[sb].append((type_, time, template, minutes, ev["id"]))
            on_time = sum(1 for now, _ in ticks if now < time)
            # On time, or late: after some runs, or after every period was finalized.
            arrivals[rng.choice([on_time, rng.randint(on_time, len(ticks)), len(ticks) + 1])].append(ev)
    end = periods[3][0] + conf.billing.grace_seconds * 1_000_000 + HOUR
    catch_up = [(end, p) for p in range(4)]  # every period, the ended ones finalized
    again = [(end, rng.randrange(3)), (end, 3)]  # an ended period billed again, and the current one
    frozen: dict = {}
    for i, (now, p) in enumerate([*ticks, *catch_up, *again]):
        slot = i if i < len(ticks) else len(ticks) + (i >= len(ticks) + len(catch_up))
        if arrivals.get(slot):
            batch = arrivals.pop(slot)
            rng.shuffle(batch)
            rows = parse_events(msgspec.json.encode(batch), batch=True, max_events=100,
                                template_known=lambda t, u: True, latest_us=2**62, received_us=0)
            await store_batch(db, rows, derivation=USAGE_DERIVATION)
        await run_billing(db, conf, *periods[p], now_us=now, prices=prices)
        final = await snapshot(db, ws)
        for invoice_id, was in frozen.items():  # a finalized invoice never changes
            assert final[invoice_id] == was
        frozen = final
    want = oracle(sandboxes, periods[:3])
    got = await billed_per_period(db, ws)
    assert {start: got.get(start, 0) for start in want} == want
