import pytest

from metering.settings import load_settings
from tests.conftest import ADMIN_TOKEN
from tests.webhooks.receiver import Receiver

SECRET = "whsec_test_0123456789abcdef"


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


@pytest.fixture
def settings(db_url, tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)
    return load_settings(
        environ={}, database_url=db_url, admin_token=ADMIN_TOKEN, reports_dir=str(tmp_path / "reports"),
        scheduler={"enabled": False},
        webhooks=[{"url": receiver.url, "secret_env": "TEST_WEBHOOK_SECRET"}],
        webhook_delivery={"max_attempts": 3, "backoff_seconds": 30, "backoff_cap_seconds": 50},
    )
