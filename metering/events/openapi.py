"""The request body of ``POST /v1/events`` in the OpenAPI document.

The handler reads the raw body itself (msgspec decodes it faster than a framework-parsed
argument, and the content type decides single versus batch), so Litestar cannot derive
the body's schema; it is written here, from the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from metering.events.schemas import EVENT_TYPES

_ID = Schema(type=OpenAPIType.STRING, pattern=r"^[A-Za-z0-9_.:\-]{1,128}$")
_DATA = Schema(
    type=OpenAPIType.OBJECT,
    required=["workspace_id", "deployment_id"],
    properties={
        "workspace_id": _ID,
        "deployment_id": _ID,
        "sandbox_id": _ID,
        "run_id": _ID,
        "template": Schema(type=OpenAPIType.STRING, examples=["giga-mini"]),
        "minutes": Schema(type=OpenAPIType.INTEGER, minimum=15, multiple_of=15),
    },
)
CLOUD_EVENT = Schema(
    type=OpenAPIType.OBJECT,
    title="CloudEvent",
    required=["specversion", "id", "source", "type", "time", "data"],
    properties={
        "specversion": Schema(type=OpenAPIType.STRING, enum=["1.0"]),
        "id": _ID,
        "source": Schema(type=OpenAPIType.STRING, min_length=1, max_length=512),
        "type": Schema(type=OpenAPIType.STRING, enum=list(EVENT_TYPES)),
        "time": Schema(type=OpenAPIType.STRING, format="date-time"),
        "subject": Schema(type=OpenAPIType.STRING),
        "data": _DATA,
    },
)
_ONE = OpenAPIMediaType(schema=CLOUD_EVENT)
_BATCH = OpenAPIMediaType(schema=Schema(type=OpenAPIType.ARRAY, items=CLOUD_EVENT, max_items=10_000))


@dataclass
class IngestOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            content={
                "application/cloudevents+json": _ONE,
                "application/json": _ONE,
                "application/cloudevents-batch+json": _BATCH,
            },
        )
