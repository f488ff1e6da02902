"""``create_app``: the Litestar application, its state and its routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.handlers import get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin

from metering.api.bodies import with_body_gate
from metering.api.fast_ingest import with_fast_ingest
from metering.api.health import HealthController, metrics_handler
from metering.api.metrics import Metrics
from metering.api.middleware import request_id_middleware
from metering.api.openapi import document_api
from metering.api.problems import on_http_exception, on_problem, on_unexpected
from metering.audit.controller import AuditController
from metering.db import Database, create_database
from metering.errors import Problem
from metering.events.controller import EventController
from metering.events.service import EventWriter
from metering.exports.controller import ExportController
from metering.invoices import payments
from metering.invoices.controller import BalanceController, BillingRunController, InvoiceController
from metering.logging import configure_logging
from metering.pricing.controller import PriceController
from metering.pricing.service import PriceCatalog
from metering.reports.controller import ReportController
from metering.settings import Settings, load_settings
from metering.settlements.controller import SettlementController
from metering.spend.controller import CostController, OverrunController
from metering.tokens.controller import TokenController
from metering.usage.controller import UsageController
from metering.usage.derive import USAGE_DERIVATION
from metering.web import TEMPLATES
from metering.web.controller import WebController


def create_app(settings: Settings | None = None, *, db: Database | None = None) -> Litestar:
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format)
    metrics = Metrics()
    prices = PriceCatalog.from_file(settings.pricing_file)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        owned = db is None
        app.state.db = db or create_database(settings.database_url)
        await prices.refresh(app.state.db)
        # The one ingest writer of this database; on SQLite its process starts with the service.
        app.state.event_writer = EventWriter(app.state.db, USAGE_DERIVATION)
        scheduler = None
        if settings.scheduler.enabled:
            from metering.scheduler.runner import Scheduler

            scheduler = Scheduler(app.state.db, settings, prices)
            scheduler.start()
        consumer = _start_consumer(app.state, settings)
        try:
            yield
        finally:
            if consumer is not None:
                await _stop_consumer(*consumer)
            if scheduler is not None:
                await scheduler.stop()
            if owned:
                await app.state.db.dispose()

    state = State({
        "settings": settings,
        "metrics": metrics,
        "prices": prices,
        # Settlements pay invoices without importing them: the invoices domain plugs in here.
        "invoice_check": payments.invoice_check,
        "on_settlement_change": payments.on_settlement_change,
    })
    app = Litestar(
        route_handlers=[
            HealthController,
            get("/metrics", operation_id="metrics", include_in_schema=True, summary="Prometheus metrics")(
                metrics_handler
            ),
            TokenController,
            EventController,
            PriceController,
            UsageController,
            ReportController,
            SettlementController,
            BillingRunController,
            InvoiceController,
            BalanceController,
            ExportController,
            AuditController,
            CostController,
            OverrunController,
            WebController,
        ],
        template_config=TEMPLATES,
        state=state,
        lifespan=[lifespan],
        middleware=[request_id_middleware(metrics)],
        exception_handlers={Problem: on_problem, HTTPException: on_http_exception, Exception: on_unexpected},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="metering",
            version="1.0.0",
            path="/schema",
            render_plugins=[JsonRenderPlugin(), SwaggerRenderPlugin()],
        ),
        logging_config=None,
        debug=False,
    )
    with_fast_ingest(app)
    with_body_gate(app)  # outermost: every body passes it before any decoder
    document_api(app)
    return app


def _start_consumer(state: State, settings: Settings) -> tuple[asyncio.Event, asyncio.Task[None]] | None:
    """With ``[ingest.nats]``, the service consumes the stream too (metering.stream)."""
    if settings.ingest.nats is None:
        return None
    from metering.stream.consumer import StreamConsumer

    stop = asyncio.Event()
    return stop, asyncio.create_task(StreamConsumer(state, settings.ingest.nats).run(stop))


async def _stop_consumer(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()  # it ends after the batch in hand (stored and acknowledged, or delivered again)
    try:
        await asyncio.wait_for(task, 15)
    except asyncio.TimeoutError:
        pass


def app_from_env() -> Litestar:
    """Factory for ASGI servers (``uvicorn --factory metering.api.app:app_from_env``)."""
    return create_app()
