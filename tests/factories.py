"""Builders for CloudEvents as the platform sends them."""

from __future__ import annotations

import itertools
from typing import Any

_ids = itertools.count(1)

SANDBOX_FIELDS = ("workspace_id", "deployment_id", "sandbox_id")


def event(
    type_: str,
    time: str,
    *,
    workspace_id: str = "ws_1",
    deployment_id: str = "dep_1",
    sandbox_id: str | None = "sb_1",
    template: str | None = "giga-mini",
    minutes: int | None = None,
    run_id: str | None = None,
    id: str | None = None,
    source: str = "/platform/sandboxes",
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {"workspace_id": workspace_id, "deployment_id": deployment_id}
    if sandbox_id is not None:
        data["sandbox_id"] = sandbox_id
    if type_ in ("sandbox.provisioning", "sandbox.running", "sandbox.extended") and template is not None:
        data["template"] = template
    if minutes is not None:
        data["minutes"] = minutes
    if run_id is not None:
        data["run_id"] = run_id
    return {
        "specversion": "1.0",
        "id": id or f"evt_{next(_ids)}",
        "source": source,
        "type": type_,
        "time": time,
        "data": data,
        **extra,
    }


BATCH = {"Content-Type": "application/cloudevents-batch+json"}
SINGLE = {"Content-Type": "application/cloudevents+json"}


DEFAULT_PRICES = {  # template: (hourly, per extension), as in config/pricing.toml
    "giga-mini": ("0.10", "0.025"),
    "giga-standard": ("0.20", "0.05"),
    "giga-pro": ("0.40", "0.10"),
    "giga-max": ("0.80", "0.20"),
    "linux-toolkit-standard": ("0.20", "0.05"),
}


def pricing_toml(change_at: str, changes: dict[str, tuple[str, str]]) -> str:
    """The default book, then a second version from ``change_at`` with ``changes`` applied."""

    def version(effective_from: str, prices: dict[str, tuple[str, str]]) -> str:
        tables = "".join(f'[versions.prices.{t}]\nhourly = "{h}"\nextension = "{e}"\n' for t, (h, e) in prices.items())
        return f'[[versions]]\neffective_from = "{effective_from}"\n{tables}'

    return "\n".join([
        'run_tiers = ["0.50", "1.00", "2.00"]',
        version("2020-01-01T00:00:00Z", DEFAULT_PRICES),
        version(change_at, {**DEFAULT_PRICES, **changes}),
    ])


def settings_with_pricing(db_url: str, tmp_path, pricing: str):  # type: ignore[no-untyped-def]
    """Test settings (as tests/conftest.py's) with their own price book."""
    from metering.settings import load_settings
    from tests.conftest import ADMIN_TOKEN

    path = tmp_path / "pricing.toml"
    path.write_text(pricing)
    return load_settings(environ={}, database_url=db_url, admin_token=ADMIN_TOKEN, pricing_file=str(path),
                         reports_dir=str(tmp_path / "reports"), scheduler={"enabled": False})
