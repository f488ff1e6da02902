import pytest

from metering.settings import load_settings
from tests.conftest import ADMIN_TOKEN
from tests.webhooks.conftest import SECRET, receiver  # noqa: F401  (the webhook receiver fixture)


@pytest.fixture
def spend_settings(db_url, tmp_path, receiver, monkeypatch):
    """Test settings with a webhook receiver; keyword arguments override (``lifetime=...``)."""
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)

    def make(**overrides):
        base = {"database_url": db_url, "admin_token": ADMIN_TOKEN, "reports_dir": str(tmp_path / "reports"),
                "scheduler": {"enabled": False},
                "webhooks": [{"url": receiver.url, "secret_env": "TEST_WEBHOOK_SECRET"}]}
        return load_settings(environ={}, **{**base, **overrides})

    return make


@pytest.fixture
def settings(spend_settings):
    return spend_settings()
