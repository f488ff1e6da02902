"""Fresh databases and the real server (``metering serve`` in its own process) for a benchmark."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from metering.migrate import upgrade
from tests.pgdb import throwaway_database
from tests.process import ServerProcess

ENGINES = ("sqlite", "postgresql")


@contextmanager
def fresh_database(engine: str, workdir: Path | None = None) -> Iterator[str]:
    """A migrated, empty database; dropped (or deleted) afterwards."""
    if engine == "sqlite":
        tmp = Path(tempfile.mkdtemp(prefix="metering-bench-", dir=workdir))
        url = f"sqlite+aiosqlite:///{tmp / 'metering.db'}"
        upgrade(url)
        try:
            yield url
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    with throwaway_database("metering_bench") as url:
        upgrade(url)
        yield url


@contextmanager
def running_server(url: str, log_path: Path, *, admin_only: bool = False) -> Iterator[tuple[ServerProcess, str]]:
    """The server on ``url`` and a token with the scopes the benchmarks use.

    ``admin_only`` hands out the operator's token from the environment instead, which is
    checked without a database lookup: a diagnostic, to show what the token lookup costs.
    """
    admin = "adm_" + secrets.token_hex(16)
    server = ServerProcess(
        # Default settings (INFO access log included), only the scheduler off: it would add its own load.
        {"METERING_DATABASE_URL": url, "METERING_ADMIN_TOKEN": admin, "METERING_SCHEDULER__ENABLED": "false"},
        log_path,
    ).start(timeout=120)
    try:
        if admin_only:
            yield server, admin
            return
        made = httpx.post(f"{server.url}/v1/tokens", headers={"Authorization": f"Bearer {admin}"},
                          json={"name": "bench", "scopes": ["events:write", "usage:read", "invoices:write"]})
        made.raise_for_status()
        yield server, made.json()["token"]
    finally:
        server.stop()
