"""Shared fixtures: every database test runs once on SQLite and once on PostgreSQL.

Each session gets a fresh SQLite file and a fresh PostgreSQL database (created in the
cluster at METERING_TEST_PG, by default 127.0.0.1:5432), migrated with Alembic.
Tables are emptied before each test.  METERING_TEST_DATABASES=sqlite limits the run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from metering.api.app import create_app
from metering.db import Database, create_database
from metering.migrate import upgrade
from metering.models import metadata
from metering.settings import Settings, load_settings
from tests.pgdb import throwaway_database

pytest_plugins = ["tests.chain.fixtures"]

ENGINES = [e for e in os.environ.get("METERING_TEST_DATABASES", "sqlite,postgresql").split(",") if e]
# scripts/test.sh runs the engines' tests in two processes at once: METERING_TEST_ONLY names
# the engines whose tests this one runs, and "none" the tests that use no database fixture.
ONLY = os.environ.get("METERING_TEST_ONLY")
ADMIN_TOKEN = "adm_" + secrets.token_hex(16)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not ONLY:
        return
    wanted = set(ONLY.split(","))
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        engine = callspec.params.get("db_url", "none") if callspec else "none"
        (keep if engine in wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session", params=ENGINES)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'metering.db'}"
        upgrade(url)
        yield url
        return
    with throwaway_database("metering_test") as url:
        upgrade(url)
        yield url


@pytest.fixture
def engine_name(db_url: str) -> str:
    return "sqlite" if db_url.startswith("sqlite") else "postgresql"


@pytest.fixture
def settings(db_url: str, tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    return load_settings(
        environ={},
        database_url=db_url,
        admin_token=ADMIN_TOKEN,
        reports_dir=str(tmp_path / "reports"),
        scheduler={"enabled": False},
        log_format="json",
    )


SEEDED = {"counters": "UPDATE counters SET value = 0"}  # rows the migrations insert


async def empty_tables(db: Database) -> None:
    """Empty every table (keeping seeded rows) between tests.

    Finalized invoices are protected by triggers; PostgreSQL's TRUNCATE does not fire row
    triggers, and on SQLite the triggers are dropped for the clean-up and put back.
    """
    async with db.write() as session:
        tables = [t.name for t in reversed(metadata.sorted_tables) if t.name not in SEEDED]
        if db.is_sqlite:
            triggers = (await session.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"))).all()
            for name, _ in triggers:
                await session.execute(text(f'DROP TRIGGER "{name}"'))
            for name in tables:
                await session.execute(text(f'DELETE FROM "{name}"'))
            for _, sql in triggers:
                await session.execute(text(sql))
        else:
            await session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        for name, sql in SEEDED.items():
            if name in metadata.tables:
                await session.execute(text(sql))


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = create_database(settings.database_url)
    await empty_tables(database)
    yield database
    await database.dispose()


@pytest.fixture
async def client(settings: Settings, db: Database) -> AsyncIterator[AsyncTestClient]:
    # The app opens its own engine: the test client may run it on another event loop,
    # and asyncpg connections belong to the loop that opened them.
    app = create_app(settings)
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def make_token(client: AsyncTestClient, admin: dict[str, str]):  # type: ignore[no-untyped-def]
    """Create a token through the API and return its Authorization header."""

    async def make(*scopes: str, workspace_id: str | None = None) -> dict[str, str]:
        body = {"name": "test", "scopes": list(scopes)}
        if workspace_id is not None:
            body["workspace_id"] = workspace_id
        resp = await client.post("/v1/tokens", json=body, headers=admin)
        assert resp.status_code == 201, resp.text
        return {"Authorization": f"Bearer {resp.json()['token']}"}

    return make
