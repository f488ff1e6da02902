from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import FromQuery

from metering.api.auth import require_scope
from metering.api.params import limit_param
from metering.audit import service
from metering.errors import Invalid, field_error


class AuditEntryView(msgspec.Struct):
    seq: int
    at: str
    kind: str
    subject: str
    data: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(msgspec.Struct):
    items: list[AuditEntryView]
    next_cursor: str | None  # the ``after`` of the next page


def _after(value: str | None) -> int:
    if value is None or value == "":
        return 0
    if not value.isdigit() or len(value) > 18:
        raise Invalid("after is not a seq", [field_error("must be a whole number (a seq, or next_cursor)", "after")])
    return int(value)


class AuditController(Controller):
    path = "/v1/audit"
    tags = ["audit"]
    guards = [require_scope]
    opt = {"scope": "admin"}

    @get(operation_id="listAudit", summary="The hash-chained audit trail, oldest first, after a seq")
    async def list(
        self, request: Request, after: FromQuery[str | None] = None, limit: FromQuery[int | None] = None,
    ) -> AuditPage:
        start, size = _after(after), limit_param(limit)
        async with request.app.state.db.read() as session:
            rows = await service.page(session, start, size + 1)
        more = len(rows) > size
        return AuditPage(items=[AuditEntryView(**service.entry_view(row)) for row in rows[:size]],
                         next_cursor=str(rows[size - 1].seq) if more else None)
