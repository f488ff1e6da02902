from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromQuery, JSONBody

from metering.api.auth import require_scope
from metering.api.params import time_param
from metering.core.pricing import price_version_to_doc
from metering.db.base import now_us
from metering.errors import NotFound


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
