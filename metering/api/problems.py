"""Every error leaves the service as RFC 9457 problem details."""

from __future__ import annotations

from http import HTTPStatus
from collections.abc import Sequence
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import Send

from metering.errors import Problem, field_error, problem_class
from metering.logging import get_logger

PROBLEM_JSON = "application/problem+json"
log = get_logger(__name__)


def problem_body(status: int, detail: str, errors: list[dict[str, Any]] | None = None,
                 slug: str | None = None) -> bytes:
    # One title and type per status, whoever answers it (a route, Litestar, the body gate).
    known = problem_class(status)
    title = known.title if known else HTTPStatus(status).phrase
    slug = slug or (known.slug if known else title.lower().replace(" ", "-"))
    return msgspec.json.encode({
        "type": f"https://metering.dev/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
        "errors": errors or [],
    })


def problem_response(
    status: int, detail: str, errors: list[dict[str, Any]] | None = None, slug: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    return Response(
        content=problem_body(status, detail, errors, slug), status_code=status, media_type=PROBLEM_JSON,
        headers=headers,
    )


async def send_problem(send: Send, status: int, detail: str, errors: list[dict[str, Any]] | None = None,
                       slug: str | None = None) -> None:
    """A problem-details answer sent straight on the ASGI channel (outside a route handler)."""
    await send_json(send, status, problem_body(status, detail, errors, slug), PROBLEM_JSON)


async def send_json(send: Send, status: int, body: bytes, media_type: str = "application/json",
                    headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """A whole JSON answer sent straight on the ASGI channel."""
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def on_problem(_: Request, exc: Problem) -> Response[bytes]:
    return problem_response(exc.status, exc.detail, exc.errors, exc.slug)


def _validation_errors(extra: Any) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    for item in extra if isinstance(extra, list) else []:
        if isinstance(item, dict):
            errors.append(field_error(str(item.get("message", "invalid")), item.get("key")))
    return errors


def on_http_exception(_: Request, exc: HTTPException) -> Response[bytes]:
    if isinstance(exc, ValidationException):
        # Litestar's own parameter validation: a well-formed request with a bad value.
        errors = _validation_errors(exc.extra)
        if any(e.get("field") == "data" for e in errors):
            # The body as a whole (absent, or not the JSON object the route takes): malformed.
            errors = [e for e in errors if e["message"] != "'data'"]  # Litestar's KeyError text
            return problem_response(400, "the body must be a JSON object", errors)
        status = 400 if "JSON" in (exc.detail or "") else 422
        return problem_response(status, exc.detail or "invalid request", errors)
    return problem_response(exc.status_code, exc.detail or HTTPStatus(exc.status_code).phrase,
                            headers=getattr(exc, "headers", None))


def on_unexpected(request: Request, exc: Exception) -> Response[bytes]:
    log.error("unhandled_error", path=request.url.path, error_type=type(exc).__name__, exc_info=exc)
    return problem_response(500, "internal error; it has been logged")
