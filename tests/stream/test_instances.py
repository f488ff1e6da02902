"""Two ``metering serve`` processes on one PostgreSQL database, ingesting over HTTP and from the
stream at once, both schedulers on, through a month of daily billing periods: the invoices of one
instance, none twice, numbers without a gap."""

import random
import threading
import time

import httpx
import msgspec
import pytest
from sqlalchemy import text

from metering.core.periods import DAY_US
from metering.core.timeutil import format_time, parse_time
from metering.db import create_database
from metering.events.service import store_batch
from metering.invoices.service import run_billing
from metering.migrate import upgrade
from metering.pricing.service import PriceCatalog
from metering.settings import load_settings
from metering.usage.derive import USAGE_DERIVATION
from tests.conftest import ADMIN_TOKEN
from tests.factories import BATCH
from tests.pgdb import throwaway_database
from tests.process import ServerProcess
from tests.reliability.test_crash import JAN_1, lifecycles
from tests.stream.nats_helpers import drop, ensure_stream, env_for, pending, publish, unique_config, wait_for

pytestmark = pytest.mark.slow
DAYS = 28
INVOICES_SQL = text("""SELECT i.workspace_id, i.period_start, i.status, i.number, i.total,
                              (SELECT count(*) FROM invoice_lines l WHERE l.invoice_id = i.id)
                       FROM invoices i ORDER BY i.workspace_id, i.period_start""")


def month_of_events() -> tuple[list[dict], int]:
    """Lifecycles over the last ``DAYS`` whole days (all billing periods have ended)."""
    today = int(time.time()) // 86400 * 86400
    first = today - DAYS * 86400
    events = lifecycles(random.Random(4), workspaces=12, sandboxes=6, per_sandbox=8)
    for ev in events:  # lifecycles spreads times over 20 days from JAN_1
        shifted = parse_time(ev["time"]) // 1_000_000 - JAN_1 + first
        ev["time"] = format_time(shifted * 1_000_000)
    return events, first * 1_000_000


@pytest.fixture
def reference_url():
    with throwaway_database("metering_ref") as url:
        upgrade(url)
        yield url


async def one_instance(url: str, events: list[dict], first: int) -> list[tuple]:
    """The reference: the same events and daily billing runs, one after the other, in this process."""
    if True:
        settings = load_settings(environ={}, database_url=url, billing={"period": "day", "grace_seconds": 0})
        db = create_database(url)
        try:
            prices = PriceCatalog.from_file(settings.pricing_file)
            await prices.refresh(db)
            from metering.events.controller import event_parser
            from litestar.datastructures import State
            parse = event_parser(State({"settings": settings, "prices": prices}))
            rows = parse(msgspec.json.encode(events), batch=True)
            await store_batch(db, rows, derivation=USAGE_DERIVATION)
            for day in range(DAYS):  # the ended periods (today's stays a draft)
                await run_billing(db, settings, first + day * DAY_US, first + (day + 1) * DAY_US, prices=prices)
            async with db.read() as session:
                return [tuple(r) for r in (await session.execute(INVOICES_SQL)).all()]
        finally:
            await db.dispose()


def servers(db_url: str, cfg, tmp_path, grace_seconds: int) -> list[ServerProcess]:
    env = {"METERING_DATABASE_URL": db_url, "METERING_ADMIN_TOKEN": ADMIN_TOKEN,
           "METERING_REPORTS_DIR": str(tmp_path / "reports"),
           "METERING_BILLING__PERIOD": "day", "METERING_BILLING__GRACE_SECONDS": str(grace_seconds),
           "METERING_SCHEDULER__BILLING_INTERVAL_SECONDS": "1",
           "METERING_SCHEDULER__BILLING_LOOKBACK_PERIODS": str(DAYS + 1),
           "METERING_SCHEDULER__REPORT_INTERVAL_SECONDS": "3600", **env_for(cfg)}
    pair = [ServerProcess(env, tmp_path / f"serve{i}.log") for i in range(2)]
    starting = [threading.Thread(target=server.start, kwargs={"timeout": 90}) for server in pair]
    for thread in starting:  # both at once: a start takes a while on a busy machine
        thread.start()
    for thread in starting:
        thread.join()
    for server in pair:
        assert server.proc is not None and server.proc.poll() is None, server.logs()[-2000:]
    return pair


async def test_two_instances_bill_a_month_as_one_does(db_url, db, tmp_path, reference_url):
    if db_url.startswith("sqlite"):
        pytest.skip("several instances share one PostgreSQL database")
    events, first = month_of_events()
    expected = await one_instance(reference_url, events, first)
    today = first + DAYS * DAY_US  # its drafts (sandboxes still running, late usage) are not final yet
    expected = [r for r in expected if r[1] < today]
    assert len(expected) > 100 and {r[2] for r in expected} == {"finalized"}

    cfg = unique_config(batch_size=100)
    await ensure_stream(cfg)
    # 1. Ingest while both schedulers refresh drafts (no period is final yet: a long grace).
    pair = servers(db_url, cfg, tmp_path, grace_seconds=60 * 86400)
    try:
        over_http, from_stream = events[::2], events[1::2]

        def send() -> None:
            for n, start in enumerate(range(0, len(over_http), 25)):
                resp = httpx.post(f"{pair[n % 2].url}/v1/events", json=over_http[start:start + 25],
                                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}", **BATCH}, timeout=30)
                assert resp.status_code == 202, resp.text

        sender = threading.Thread(target=send)
        sender.start()
        await publish(cfg, [(msgspec.json.encode(ev), None) for ev in from_stream])
        sender.join()
        await wait_for(lambda: _drained(cfg), 120, "the stream consumed")
        async with db.read() as session:
            assert (await session.execute(text("SELECT count(*) FROM events"))).scalar_one() == len(events)
            drafts = (await session.execute(text("SELECT count(*), count(number) FROM invoices"))).one()
        assert drafts[0] > 0 and drafts[1] == 0  # drafts were being refreshed, none final
    finally:
        for server in pair:
            server.stop()
    # 2. Both instances again, now past the grace: their schedulers finalize the month.
    pair = servers(db_url, cfg, tmp_path, grace_seconds=0)
    try:
        await wait_for(lambda: _finalized(db, len(expected)), 180, "every invoice finalized")
        time.sleep(3)  # a few more ticks of both schedulers change nothing
        async with db.read() as session:
            got = [tuple(r) for r in (await session.execute(INVOICES_SQL)).all()]
        assert all(r[2] == "draft" for r in got if r[1] >= today)
        got = [r for r in got if r[1] < today]
    finally:
        for server in pair:
            server.stop()
        await drop(cfg)
    without_numbers = [r[:3] + r[4:] for r in got]
    assert without_numbers == [r[:3] + r[4:] for r in expected]
    assert sorted(r[3] for r in got) == [f"INV-{i:06d}" for i in range(1, len(expected) + 1)]


async def _drained(cfg) -> bool:
    return await pending(cfg) == (0, 0)


async def _finalized(db, n: int) -> bool:
    async with db.read() as session:
        return (await session.execute(text("SELECT count(number) FROM invoices"))).scalar_one() >= n
