"""``GET /v1/exports/{dataset}``: a finance export, streamed."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromPath, FromQuery
from litestar.response import Stream
from litestar.types import Receive, Scope, Send

from metering.api.auth import current_principal, ensure_workspace, require_scope
from metering.api.params import choice_param, id_param, range_params
from metering.core.timeutil import format_time
from metering.db.base import now_us
from metering.errors import NotFound
from metering.exports.columns import DATASETS, FORMATS
from metering.exports.formats import MEDIA_TYPES
from metering.exports.plan import ExportRequest
from metering.exports.service import export


class _ClosesWhenDone:
    """An ASGI response, then its body's generator closed, however the response ended.

    When the client hangs up while the server waits to send it more (its socket is full),
    Litestar cancels that send and leaves the generator suspended where it handed over the
    chunk: unclosed, the export's reader would hold its read transaction (a pooled
    connection, a snapshot that holds back PostgreSQL's vacuum and SQLite's checkpoints)
    until the garbage collector found the generator, which on a quiet server may be never.
    """

    def __init__(self, response: Any, body: AsyncGenerator[bytes, None]) -> None:
        self._response = response
        self._body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._response(scope, receive, send)
        finally:
            await self._body.aclose()  # nothing if it ran to its end


class ClosingStream(Stream):
    """A ``Stream`` of an async generator that is closed when the response ends (``_ClosesWhenDone``)."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        return _ClosesWhenDone(super().to_asgi_response(*args, **kwargs), self.iterator)  # type: ignore[arg-type]


class ExportController(Controller):
    path = "/v1/exports"
    tags = ["exports"]
    guards = [require_scope]
    opt = {"scope": "exports:read"}

    @get(
        "/{dataset:str}",
        operation_id="exportDataset",
        summary="Export usage, invoices, invoice_lines or settlements over [start, end)",
        description=(
            "Streamed as CSV (RFC 4180, header row), NDJSON or Parquet. `usage`: one row per billed "
            "interval piece and per extension in the range; `invoices` and `invoice_lines`: invoices "
            "whose period starts in the range; `settlements`: settlements created in the range. "
            "A workspace-bound token exports its own workspace only."
        ),
    )
    async def export_dataset(
        self,
        request: Request,
        dataset: FromPath[str],
        start: FromQuery[str | None] = None,
        end: FromQuery[str | None] = None,
        workspace_id: FromQuery[str | None] = None,
        format: FromQuery[str | None] = None,  # noqa: A002 - the contract's parameter name
    ) -> Stream:  # a ClosingStream; annotated as Stream, which the OpenAPI document knows
        if dataset not in DATASETS:
            raise NotFound(f"no export dataset {dataset!r}; there are {', '.join(DATASETS)}")
        principal = current_principal(request)
        if id_param("workspace_id", workspace_id) is not None:
            ensure_workspace(principal, workspace_id)
        start_us, end_us = range_params(start, end)
        fmt = choice_param("format", format, FORMATS) or "csv"
        # A bound token without workspace_id exports its own workspace, never everyone's.
        job = ExportRequest(dataset, start_us, end_us, workspace_id or principal.workspace_id, fmt)

        state = request.app.state
        # Everything that can fail cleanly fails before the first byte: once streaming has
        # begun, the status line is sent and a problem document can no longer be.
        book = await state.prices.refresh(state.db)
        now = now_us()
        return ClosingStream(
            export(state.db, job, book, now, lifetime=state.settings.lifetime.policy),
            media_type=MEDIA_TYPES[fmt],
            headers={
                "Content-Disposition": f'attachment; filename="{job.filename}"',
                # Open intervals are cut here: the same request later may show more usage.
                "X-Export-As-Of": format_time(now),
                "Cache-Control": "no-store",
            },
        )
