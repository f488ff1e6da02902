"""Relative paths in the settings mean the same files wherever a command runs."""

from __future__ import annotations

import pytest

from metering.settings import DEFAULT_CONFIG, ROOT, Settings, load_settings
from tests.cli.helpers import clean_env, http, metering
from tests.conftest import ADMIN_TOKEN
from tests.process import ServerProcess

EVENT = ('{"specversion": "1.0", "id": "evt-1", "source": "/s", "type": "sandbox.running", '
         '"time": "2026-01-05T10:00:00Z", "data": {"workspace_id": "ws_1", "deployment_id": "dep_1", '
         '"sandbox_id": "sb_1", "template": "giga-mini"}}')


def settings_file(tmp_path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "etc" / "settings.toml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_relative_paths_are_relative_to_the_settings_file(tmp_path, monkeypatch):
    conf = settings_file(tmp_path, 'database_url = "sqlite+aiosqlite:///../var/m.db?timeout=5"\n'
                                   'reports_dir = "reports"\npricing_file = "/srv/pricing.toml"\n')
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    got = load_settings(conf, environ={})
    assert got.database_url == f"sqlite+aiosqlite:///{tmp_path}/var/m.db?timeout=5"
    assert got.reports_dir == str(tmp_path / "etc" / "reports")
    assert got.pricing_file == "/srv/pricing.toml"  # absolute stays as it is

    # Relative environment overrides too: one rule, whoever set the value.
    env = load_settings(conf, environ={"METERING_DATABASE_URL": "sqlite+aiosqlite:///./x.db",
                                       "METERING_REPORTS_DIR": "../out"})
    assert env.database_url == f"sqlite+aiosqlite:///{tmp_path}/etc/x.db"
    assert env.reports_dir == str(tmp_path / "out")
    for url in ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite:////abs/m.db",
                "postgresql+asyncpg://u@127.0.0.1:5432/db"):
        assert load_settings(conf, environ={"METERING_DATABASE_URL": url}).database_url == url


def test_the_default_file_means_the_checkout_s_data_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = load_settings(environ={})
    # What scripts/serve.sh used before: <checkout>/data/metering.db, <checkout>/config/pricing.toml.
    assert got.database_url == f"sqlite+aiosqlite:///{ROOT}/data/metering.db"
    assert got.reports_dir == str(ROOT / "data" / "reports")
    assert got.pricing_file == str(ROOT / "config" / "pricing.toml")
    # The built-in defaults (a settings file that leaves the keys out) are the same files.
    assert (Settings().database_url, Settings().reports_dir, Settings().pricing_file) == (
        got.database_url, got.reports_dir, got.pricing_file)
    assert DEFAULT_CONFIG.exists()


@pytest.mark.slow
def test_the_cli_from_any_directory_uses_the_server_s_database(tmp_path):
    conf = settings_file(tmp_path, 'database_url = "sqlite+aiosqlite:///../data/metering.db"\n'
                                   'reports_dir = "../data/reports"\n[scheduler]\nenabled = false\n')
    env = clean_env(METERING_CONFIG=str(conf), METERING_ADMIN_TOKEN=ADMIN_TOKEN)
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()

    made = metering("tokens", "create", "--name", "cli", "--scope", "events:write", "--scope", "invoices:read",
                    env=env, cwd=here)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()

    server = ServerProcess(env, tmp_path / "server.log").start(timeout=90)  # runs in the checkout
    try:
        auth = {"Authorization": f"Bearer {token}"}
        sent = http.post(f"{server.url}/v1/events", content=EVENT,
                          headers={**auth, "Content-Type": "application/cloudevents+json"})
        assert sent.status_code == 202, sent.text  # the server knows the token made in ./here

        billed = metering("billing", "run", "--period-start", "2026-01-01T00:00:00Z",
                          "--period-end", "2026-02-01T00:00:00Z", env=env, cwd=there)
        assert billed.returncode == 0, billed.stderr
        assert ": 1 invoices, 1 finalized" in billed.stdout  # it saw the event the server stored
        invoices = http.get(f"{server.url}/v1/invoices?workspace_id=ws_1", headers=auth).json()
        assert [i["status"] for i in invoices["items"]] == ["finalized"]  # and the server sees its invoice
    finally:
        server.stop()
    assert (tmp_path / "data" / "metering.db").exists()
    assert not list(here.iterdir()) and not list(there.iterdir())  # no stray database where we stood
