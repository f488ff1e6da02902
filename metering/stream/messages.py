"""NATS messages as CloudEvents (the CloudEvents NATS binding), and their dead letters."""

from __future__ import annotations

from typing import Any

from metering.api.problems import problem_body
from metering.core.jsondepth import MAX_DEPTH, nests_deeper_than
from metering.errors import BadRequest, Problem
from metering.events.binary import SPECVERSION_HEADER, is_binary, structured_event
from metering.events.controller import media_type

PROBLEM_HEADER = "Metering-Problem"


def event_body(data: bytes, headers: dict[str, str] | None) -> bytes:
    """The structured-mode JSON of one message.

    Binary mode: the attributes in ``ce-*`` headers, ``data`` as the payload (NATS header
    values are not percent-encoded).  Structured mode (``Content-Type:
    application/cloudevents+json``, or no headers at all): the payload is the event.
    """
    if nests_deeper_than(data, MAX_DEPTH):  # before any recursive decoder sees it, as over HTTP
        raise BadRequest(f"the message nests deeper than {MAX_DEPTH} levels")
    if not headers:
        return data
    lowered = {name.lower(): value for name, value in headers.items()}
    if is_binary(media_type(lowered.get("content-type", "")), SPECVERSION_HEADER in lowered):
        return structured_event(lowered.items(), data, percent_encoded=False)
    return data


def dead_letter_headers(headers: dict[str, str] | None, problem: Problem, subject: str) -> dict[str, Any]:
    """The original headers (a binary event's attributes), the problem details as JSON, and
    where the message came from."""
    detail = problem_body(problem.status, problem.detail, problem.errors, problem.slug).decode()
    return {**(headers or {}), PROBLEM_HEADER: detail, "Metering-Subject": subject}
