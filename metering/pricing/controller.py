from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromQuery, JSONBody

from metering.api.auth import require_scope
from metering.api.params import time_param
from metering.core.pricing import price_version_to_doc
from metering.core.timeutil import parse_time
from metering.db.base import now_us
from metering.errors import Invalid, NotFound, field_error
from metering.pricing.preview import preview

EARLIEST, LATEST = parse_time("2000-01-01T00:00:00Z"), parse_time("2100-01-01T00:00:00Z")  # CONTRACT 1


class PreviewRequest(msgspec.Struct, forbid_unknown_fields=True):
    version: Any  # as POST /v1/prices takes it, any effective_from
    period_start: str
    period_end: str
    workspace_id: str | None = None
    as_of: str | None = None  # usage of a period still running counts up to here (default: now)


class PreviewLine(msgspec.Struct, omit_defaults=True):
    kind: str
    deployment_id: str | None
    template: str | None
    current: str
    rerated: str
    delta: str
    usage_kind: str | None = None  # adjustment lines only
    original_period_start: str | None = None  # adjustment lines only


class PreviewItem(msgspec.Struct):
    workspace_id: str
    invoice_id: str | None
    status: str | None  # of the stored invoice, if any
    current: str
    rerated: str
    delta: str
    lines: list[PreviewLine]


class PreviewResponse(msgspec.Struct):
    period_start: str
    period_end: str
    effective_from: str
    items: list[PreviewItem]
    current: str
    rerated: str
    delta: str


class PriceController(Controller):
    path = "/v1/prices"
    tags = ["prices"]
    guards = [require_scope]

    @get(operation_id="getPrices", summary="The price book in effect at a time (default: now)",
         opt={"scope": None})
    async def current(self, request: Request, at: FromQuery[str | None] = None) -> dict[str, Any]:
        at_us = time_param("at", at)
        if at_us is None:
            at_us = now_us()
        book = await request.app.state.prices.refresh(request.app.state.db)
        version = book.at(at_us)
        if version is None:
            raise NotFound("no price book is in effect at that time")
        return price_version_to_doc(version)

    @post(operation_id="addPrices", status_code=201, summary="Add a price-book version taking effect later",
          opt={"scope": "admin"})
    async def add(self, request: Request, data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
        version = await request.app.state.prices.add_version(request.app.state.db, data)
        return price_version_to_doc(version)

    @post("/preview", operation_id="previewPrices", status_code=200, opt={"scope": "admin"},
          summary="Each invoice of a period re-rated with a price version, beside what it is (nothing stored)")
    async def preview(self, request: Request, data: JSONBody[PreviewRequest]) -> PreviewResponse:
        start = time_param("period_start", data.period_start, required=True)
        end = time_param("period_end", data.period_end, required=True)
        as_of = time_param("as_of", data.as_of)
        assert start is not None and end is not None
        for name, value in (("period_start", start), ("period_end", end), ("as_of", as_of)):
            if value is not None and not EARLIEST <= value < LATEST:
                raise Invalid(f"{name} is out of range", [field_error("must lie in [2000-01-01, 2100-01-01)", name)])
        state = request.app.state
        shown = await preview(state.db, state.settings, state.prices, data.version, start, end,
                              data.workspace_id, as_of)
        return msgspec.convert(shown, PreviewResponse)
