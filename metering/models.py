"""Every table, imported in one place so Alembic and tests see the whole schema."""

from sqlmodel import SQLModel

from metering.audit.models import AuditEntry
from metering.events.models import Event
from metering.invoices.models import BillingRun, Counter, Invoice, InvoiceLine
from metering.pricing.models import PriceVersionRow
from metering.reports.models import Report
from metering.scheduler.models import JobLease, JobRun
from metering.settlements.models import Settlement
from metering.spend.models import Budget, BudgetNotification, OverrunNotification
from metering.tokens.models import ApiToken
from metering.usage.models import ChangedDay, SandboxHistoryChunk, SandboxState, UsageExtension, UsageInterval
from metering.web.models import WebSession
from metering.webhooks.models import Delivery, OutboxEvent

metadata = SQLModel.metadata

__all__ = [
    "ApiToken", "AuditEntry", "BillingRun", "Budget", "BudgetNotification", "ChangedDay", "Counter", "Delivery", "Event",
    "Invoice", "InvoiceLine", "JobLease", "JobRun", "OutboxEvent", "OverrunNotification", "PriceVersionRow", "Report",
    "SandboxHistoryChunk", "SandboxState", "Settlement", "UsageExtension", "UsageInterval", "WebSession", "metadata",
]
