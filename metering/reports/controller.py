"""``GET /v1/reports``, ``GET /v1/reports/{id}``, ``GET /v1/reports/{id}/content``."""

from __future__ import annotations

import asyncio

from litestar import Controller, Request, Response, get
from litestar.params import FromPath, FromQuery
from sqlalchemy import select, tuple_

from metering.api.auth import ensure_workspace, require_scope
from metering.api.params import choice_param, id_param, limit_param, time_param
from metering.core.timeutil import format_time
from metering.db.paging import decode_cursor, encode_cursor
from metering.errors import Invalid, NotFound, field_error
from metering.reports.files import day_name, resolve
from metering.reports.models import Report
from metering.reports.render import KIND

REPORTS = Report.__table__
KINDS = (KIND,)
FORMATS = {"json": "application/json", "csv": "text/csv; charset=utf-8"}


def report_view(row) -> dict:  # type: ignore[no-untyped-def]
    base = f"/v1/reports/{row.id}/content?format="
    return {
        "id": row.id,
        "kind": row.kind,
        "workspace_id": row.workspace_id,
        "day": day_name(row.start),
        "start": format_time(row.start),
        "end": format_time(row.end),
        "created_at": format_time(row.created_at),
        "content": {fmt: base + fmt for fmt in FORMATS},
    }


class ReportController(Controller):
    path = "/v1/reports"
    tags = ["reports"]
    guards = [require_scope]
    opt = {"scope": "usage:read"}

    @get(operation_id="listReports", summary="Reports, oldest day first; filter by workspace, kind and day")
    async def list_reports(
        self,
        request: Request,
        workspace_id: FromQuery[str | None] = None,
        kind: FromQuery[str | None] = None,
        start: FromQuery[str | None] = None,
        end: FromQuery[str | None] = None,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> dict:
        principal = request.state.principal
        if id_param("workspace_id", workspace_id or None):
            ensure_workspace(principal, workspace_id)
        kind = choice_param("kind", kind, KINDS)
        start_us, end_us = time_param("start", start), time_param("end", end, end=True)
        if start_us is not None and end_us is not None and end_us <= start_us:
            raise Invalid("end must be after start", [field_error("must be after start", "end")])
        size = limit_param(limit)
        position = decode_cursor(cursor)

        query = select(REPORTS).order_by(REPORTS.c.start, REPORTS.c.id).limit(size + 1)
        # A workspace-bound token lists its own workspace only, filter or not.
        owner = workspace_id or principal.workspace_id
        if owner:
            query = query.where(REPORTS.c.workspace_id == owner)
        if kind:
            query = query.where(REPORTS.c.kind == kind)
        if start_us is not None:
            query = query.where(REPORTS.c.start >= start_us)
        if end_us is not None:
            query = query.where(REPORTS.c.start < end_us)
        if position is not None:
            query = query.where(tuple_(REPORTS.c.start, REPORTS.c.id) > tuple_(*position))
        async with request.app.state.db.read() as session:
            rows = (await session.execute(query)).all()
        page = rows[:size]
        next_cursor = encode_cursor(page[-1].start, page[-1].id) if len(rows) > size else None
        return {"items": [report_view(r) for r in page], "next_cursor": next_cursor}

    async def _visible(self, request: Request, report_id: str):  # type: ignore[no-untyped-def]
        async with request.app.state.db.read() as session:
            row = (await session.execute(select(REPORTS).where(REPORTS.c.id == report_id))).first()
        # Unknown and foreign are the same 404: a bound token learns nothing of other tenants.
        if row is None or not request.state.principal.sees(row.workspace_id):
            raise NotFound(f"no report {report_id!r}")
        return row

    @get("/{report_id:str}", operation_id="getReport", summary="One report's index entry")
    async def get_report(self, request: Request, report_id: FromPath[str]) -> dict:
        return report_view(await self._visible(request, report_id))

    @get("/{report_id:str}/content", operation_id="getReportContent", summary="A report's content as JSON or CSV",
         media_type="application/json")
    async def content(
        self, request: Request, report_id: FromPath[str], format: FromQuery[str | None] = None,  # noqa: A002
    ) -> Response[bytes]:
        fmt = choice_param("format", format, tuple(FORMATS)) or "json"
        row = await self._visible(request, report_id)
        relative = row.json_path if fmt == "json" else row.csv_path
        try:
            path = resolve(request.app.state.settings.reports_dir, relative)
            body = await asyncio.to_thread(path.read_bytes)
        except (OSError, ValueError):
            raise NotFound(f"the {fmt} content of report {report_id!r} is no longer in the reports directory") from None
        filename = f"{row.workspace_id}-{day_name(row.start)}.{fmt}"
        return Response(content=body, media_type=FORMATS[fmt],
                        headers={"Content-Disposition": f'inline; filename="{filename}"'})
