"""The OpenAPI document says what the service does: every status, every constraint, the auth.

Litestar derives operations and bodies from the handlers; what it cannot see is added here,
once, from the same rules the service applies (CONTRACT 1):

- every status an operation can answer, each with the problem-details schema
  (``application/problem+json``), from what every request can meet (the URL check, the
  token guard, the body gate, parameter checks) and a short list of per-operation conflicts;
- the bearer security scheme, required by every ``/v1`` operation;
- the constraints of each query and path parameter (``limit`` 1 to 500, times as RFC 3339
  in [2000, 2100), id patterns, choices), and of the JSON bodies Litestar sees as plain strings;
- links: a created token to its revocation, a billing run to its invoices, a reported
  settlement to its GET.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin

from metering.api.params import MAX_LIMIT
from metering.errors import problem_class
from metering.events.schemas import MAX_MINUTES, SOURCE_MAX
from metering.exports.columns import DATASETS, FORMATS as EXPORT_FORMATS
from metering.invoices.models import STATUSES as INVOICE_STATUSES
from metering.reports.controller import FORMATS as REPORT_FORMATS, KINDS as REPORT_KINDS
from metering.settlements.models import Status
from metering.tokens.service import SCOPES
from metering.usage.compute import GROUP_FIELDS

PROBLEM_JSON = "application/problem+json"
ID = {"type": "string", "pattern": r"^[A-Za-z0-9_.:\-]{1,128}$"}
# RFC 3339 with an offset, in [2000-01-01, 2100-01-01) (the pattern keeps the years there).
TIME = {"type": "string", "format": "date-time", "pattern": r"^20[0-9]{2}-"}
ADDRESS = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}
GROUP_BY = {"type": "string", "pattern": rf"^({'|'.join(GROUP_FIELDS)})(,({'|'.join(GROUP_FIELDS)}))*$"}


def _choice(values: Any) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


PARAMETERS: dict[str, dict[str, Any]] = {  # by name, wherever the name appears
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    "workspace_id": ID, "invoice_id": ID, "payer": ADDRESS,
    "start": TIME, "end": TIME, "as_of": TIME, "at": TIME, "period_start": TIME,
    "group_by": GROUP_BY, "window": _choice(("hour", "day", "month")),
}
OPERATION_PARAMETERS: dict[tuple[str, str], dict[str, Any]] = {  # the same name, other choices
    ("listInvoices", "status"): _choice(INVOICE_STATUSES),
    ("listSettlements", "status"): _choice(Status.ALL),
    ("listReports", "kind"): _choice(REPORT_KINDS),
    ("getReportContent", "format"): _choice(REPORT_FORMATS),
    ("exportDataset", "format"): _choice(EXPORT_FORMATS),
    ("exportDataset", "dataset"): _choice(DATASETS),
}
REQUIRED = {("getUsage", "start"), ("getUsage", "end"), ("exportDataset", "start"), ("exportDataset", "end")}
BODIES: dict[str, dict[str, dict[str, Any]]] = {  # component schema -> property -> constraints
    "TokenCreate": {
        # The service takes any printable text; the document promises the part every client can type.
        "name": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[ -~]+$"},
        "scopes": {"type": "array", "minItems": 1, "items": _choice(SCOPES)},
        "workspace_id": {"oneOf": [ID, {"type": "null"}]},
    },
    "BillingRunRequest": {"period_start": TIME, "period_end": TIME},
}
# Statuses beyond those every operation of its kind can answer (see ``statuses``).
EXTRA_STATUSES: dict[str, tuple[int, ...]] = {
    "ready": (503,),
    "ingestEvents": (409, 503),
    "reportSettlement": (404, 409),
    "addPrices": (409,),
    "voidInvoice": (409,),
    "getPrices": (404,),
}
# Answers Litestar's one status_code per handler does not show.
ALSO_SUCCESS = {"reportSettlement": ("200", "202")}
MORE_MEDIA = {"getReportContent": ("text/csv",), "metrics": ("text/plain",),
              "exportDataset": ("text/csv", "application/x-ndjson", "application/vnd.apache.parquet")}
ONLY_MEDIA = {"metrics"}  # Litestar says application/json for any handler
LINKS: dict[tuple[str, str], dict[str, Any]] = {
    ("createToken", "201"): {"RevokeToken": {"operationId": "revokeToken",
                                             "parameters": {"token_id": "$response.body#/id"}}},
    ("runBilling", "201"): {"ListInvoices": {"operationId": "listInvoices",
                                             "parameters": {"period_start": "$response.body#/period_start"}}},
}
for _code in ("200", "201", "202"):
    LINKS[("reportSettlement", _code)] = {"GetSettlement": {
        "operationId": "getSettlement", "parameters": {"settlement_id": "$response.body#/id"}}}

PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "errors"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["message"],
            "properties": {"index": {"type": "integer"}, "field": {"type": "string"}, "message": {"type": "string"}},
        }},
    },
}


class _CompletedOpenAPI(OpenAPIPlugin):
    """Litestar's plugin, serving the completed document (built on the first request for it)."""

    __slots__ = ()

    def provide_openapi_schema(self) -> dict[str, Any]:
        if not self._openapi_schema:
            self._openapi_schema = complete(self.provide_openapi().to_schema())
        return self._openapi_schema


def document_api(app: Litestar) -> None:
    app.plugins.get(OpenAPIPlugin).__class__ = _CompletedOpenAPI


def statuses(path: str, method: str, op: dict[str, Any]) -> set[int]:
    names = {p["name"] for p in op.get("parameters", [])}
    found = {400}  # a URL holding %00 (api.middleware), whatever the operation
    if path.startswith("/v1/"):
        found |= {401, 403}  # no or an unknown token; a token without the scope
        if names or method in ("post", "put", "patch"):
            found.add(422)
        if any(p["in"] == "path" for p in op.get("parameters", [])) or "workspace_id" in names:
            found.add(404)  # unknown id, or another tenant's workspace for a bound token
    if method in ("post", "put", "patch"):
        found |= {413, 415}  # the body gate (api.bodies)
    return found | set(EXTRA_STATUSES.get(op.get("operationId", ""), ()))


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    components["securitySchemes"] = {"bearer": {
        "type": "http", "scheme": "bearer", "bearerFormat": "mtr_sk_<32 hex digits>",
        "description": "A service token, or the operator's METERING_ADMIN_TOKEN"}}
    for name, constraints in BODIES.items():
        props = components["schemas"].get(name, {}).get("properties", {})
        for prop, schema in constraints.items():
            if prop in props:
                props[prop] = schema
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if isinstance(op, dict) and "responses" in op:
                _complete_operation(path, method, op)
    return doc


def _complete_operation(path: str, method: str, op: dict[str, Any]) -> None:
    op_id = op.get("operationId", "")
    if path.startswith("/v1/"):
        op["security"] = [{"bearer": []}]
    for param in op.get("parameters", []):
        schema = OPERATION_PARAMETERS.get((op_id, param["name"])) or PARAMETERS.get(param["name"])
        if schema is not None:
            param["schema"] = schema
        if (op_id, param["name"]) in REQUIRED:
            param["required"] = True
    responses = op["responses"]
    success = next((responses[c] for c in ("201", "200") if c in responses), None)
    for code in ALSO_SUCCESS.get(op_id, ()):
        responses.setdefault(code, success)
    if op_id in ONLY_MEDIA:
        responses["200"]["content"] = {}
    for media in MORE_MEDIA.get(op_id, ()):
        responses["200"].setdefault("content", {})[media] = {"schema": {"type": "string"}}
    for code in sorted(statuses(path, method, op)):
        cls = problem_class(code)
        responses[str(code)] = {
            "description": cls.title if cls else HTTPStatus(code).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    for code, response in responses.items():
        links = LINKS.get((op_id, code))
        if links:
            response["links"] = links
