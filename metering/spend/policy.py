"""``[lifetime]`` of the settings, made the process's billing policy (usage.compute.clip).

Called where a process takes its settings (the app, the scheduler, the CLI), so usage
queries, invoices, reports and exports all bill by the same rule.
"""

from __future__ import annotations

from metering.core.lifecycle import LifetimePolicy
from metering.settings import Settings
from metering.usage.compute import set_lifetime_policy


def policy_of(settings: Settings) -> LifetimePolicy:
    return LifetimePolicy(settings.lifetime.tolerance_seconds * 1_000_000, settings.lifetime.bill_beyond)


def use_lifetime_settings(settings: Settings) -> None:
    set_lifetime_policy(policy_of(settings))
