"""CloudEvents binary content mode: attributes in ``ce-*`` headers, ``data`` as the body.

The HTTP and NATS bindings both carry it.  Rather than a second parser, a binary-mode
message is turned into the structured-mode event it stands for (the attributes, the
``Content-Type`` as ``datacontenttype``, the body as ``data``), which then takes the one
path every event takes: same validation, same answers, same stored payload, so a binary
event and its structured twin are duplicates of each other.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote

import msgspec

from metering.errors import BadRequest

CE_PREFIX = "ce-"
SPECVERSION_HEADER = "ce-specversion"
# A binary-mode event's data is JSON; without a Content-Type it is taken as JSON too.
BINARY_TYPES = ("application/json", "")

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def is_binary(kind: str, has_specversion_header: bool) -> bool:
    """``kind``: the request's media type (lower case, no parameters)."""
    return has_specversion_header and kind in BINARY_TYPES


def structured_event(headers: Iterable[tuple[str, str]], body: bytes, *, percent_encoded: bool) -> bytes:
    """The structured-mode JSON of a binary-mode message.

    ``percent_encoded``: header values are percent-encoded (the HTTP binding says so; the
    NATS binding does not).  A body that is not one JSON value is a 400.
    """
    attributes: dict[str, object] = {}
    for name, value in headers:
        name = name.lower()
        if name.startswith(CE_PREFIX) and len(name) > len(CE_PREFIX):
            attributes[name[len(CE_PREFIX):]] = unquote(value) if percent_encoded else value
        elif name == "content-type" and value:
            attributes["datacontenttype"] = value
    if body.strip():
        try:
            attributes["data"] = _decode(body)
        except msgspec.DecodeError as exc:
            raise BadRequest(f"the body (the event's data) is not valid JSON: {exc}") from None
    return _encode(attributes)
