"""Domain errors.  The API turns each into an RFC 9457 problem-details response."""

from __future__ import annotations

from typing import Any


class Problem(Exception):
    status = 500
    title = "Internal Server Error"
    slug = "internal"

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Pickled (from the writer process) with its errors, not only the detail that
        # Exception keeps in ``args``.
        return type(self), (self.detail, self.errors)


class BadRequest(Problem):
    status, title, slug = 400, "Bad Request", "bad-request"


class Unauthorized(Problem):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(Problem):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(Problem):
    status, title, slug = 404, "Not Found", "not-found"


class Conflict(Problem):
    status, title, slug = 409, "Conflict", "conflict"


class PayloadTooLarge(Problem):
    status, title, slug = 413, "Payload Too Large", "payload-too-large"


class UnsupportedMediaType(Problem):
    status, title, slug = 415, "Unsupported Media Type", "unsupported-media-type"


class Invalid(Problem):
    status, title, slug = 422, "Unprocessable Content", "validation"


class Unavailable(Problem):
    status, title, slug = 503, "Service Unavailable", "unavailable"


def field_error(message: str, field: str | None = None, index: int | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"message": message}
    if index is not None:
        err["index"] = index
    if field is not None:
        err["field"] = field
    return err


def problem_class(status: int) -> type[Problem] | None:
    """The one class, hence the one title and problem ``type``, of a status."""
    return _BY_STATUS.get(status)


_BY_STATUS = {cls.status: cls for cls in Problem.__subclasses__()}
