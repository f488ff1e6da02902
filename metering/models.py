"""Every table, imported in one place so Alembic and tests see the whole schema."""

from sqlmodel import SQLModel

from metering.events.models import Event
from metering.pricing.models import PriceVersionRow
from metering.tokens.models import ApiToken
from metering.usage.models import UsageExtension, UsageInterval

metadata = SQLModel.metadata

__all__ = ["ApiToken", "Event", "PriceVersionRow", "UsageExtension", "UsageInterval", "metadata"]
