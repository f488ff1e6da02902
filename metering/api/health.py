from __future__ import annotations

from litestar import Controller, Request, Response, get
from sqlalchemy import text

from metering.api.problems import problem_response
from metering.migrate import head_revision


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/live", operation_id="live", summary="The process answers")
    async def live(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", operation_id="ready", summary="The database is reachable and migrated")
    async def ready(self, request: Request) -> Response:
        db = request.app.state.db
        try:
            async with db.connect() as conn:
                current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        except Exception as exc:  # noqa: BLE001 - any failure here means "not ready"
            return problem_response(503, f"database unreachable: {type(exc).__name__}")
        head = head_revision()
        if current != head:
            return problem_response(503, f"database at migration {current}, code expects {head}")
        return Response({"status": "ok", "migration": current})


async def metrics_handler(request: Request) -> Response[bytes]:
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")
