from __future__ import annotations

import asyncio

import msgspec
from litestar import Controller, MediaType, Request, Response, get
from litestar.params import FromPath, FromQuery

from metering.api.auth import ensure_workspace, require_scope
from metering.api.params import choice_param, id_param, range_params, time_param
from metering.core.money import format_money, format_seconds, round_micro, round_ratio
from metering.core.periods import WINDOWS
from metering.core.timeutil import format_time
from metering.db.base import now_us
from metering.errors import Invalid, field_error
from metering.usage.compute import GROUP_FIELDS, MAX_ITEMS, aggregate, count_items, total
from metering.usage.service import read_usage_rows


def group_by_param(value: str | None) -> tuple[str, ...]:
    if value is None or value.strip() == "":
        return ("template",)
    parts = [p.strip() for p in value.split(",")]
    bad = [p for p in parts if p not in GROUP_FIELDS]
    if bad or len(set(parts)) != len(parts):
        raise Invalid("group_by is invalid",
                      [field_error(f"must be a comma list of distinct {', '.join(GROUP_FIELDS)}", "group_by")])
    return tuple(parts)


# Past this many rows, or this many priced pieces (each row is priced in at most as many
# pieces as there are items), the answer is counted, priced and encoded on a thread, and the
# event loop answers other requests meanwhile: 10,000 items took it over 100 ms on a loaded
# machine (the count and the exact total included, which were made on the loop).
ROWS_ON_LOOP = 1_000
PIECES_ON_LOOP = 5_000


def usage_items(intervals, extensions, book, span: dict) -> tuple[list[dict], dict]:  # type: ignore[no-untyped-def]
    buckets = aggregate(intervals, extensions, book, **span)
    items = []
    for key, bucket in buckets.items():
        item: dict = {name: (format_time(value) if name == "window_start" else value) for name, value in key}
        # Each amount is an integer over the tariff's scale (usage.compute.Bucket): rounded
        # from there, as round_micro would round its Fraction.
        running, extension, scale = bucket.running_scaled, bucket.extension_scaled, bucket.scale
        item.update(
            running_seconds=format_seconds(bucket.running_us),
            running_amount=format_money(round_ratio(running, scale)),
            extensions=bucket.extensions,
            extension_amount=format_money(round_ratio(extension, scale)),
            amount=format_money(round_ratio(running + extension, scale)),
        )
        items.append(item)
    return items, buckets


def check_count(intervals, extensions, span: dict) -> int:  # type: ignore[no-untyped-def]
    """How many items the query answers; 422 past ``MAX_ITEMS``."""
    count = count_items(intervals, extensions, **span)
    if count > MAX_ITEMS:
        raise Invalid(f"the query would answer more than {MAX_ITEMS} items; narrow it",
                      [field_error("use a longer window or a shorter range", "window"),
                       field_error("group by fewer fields", "group_by")])
    return count


def usage_answer(  # type: ignore[no-untyped-def]
    intervals, extensions, book, span: dict, head: dict, counted: bool
) -> bytes:
    """The whole answer's JSON: ``head``, then the items and their total (``counted``: else
    first ``check_count``)."""
    if not counted:
        check_count(intervals, extensions, span)
    items, buckets = usage_items(intervals, extensions, book, span)
    return _encode({**head, "items": items, "total": format_money(round_micro(total(buckets)))})


_encode = msgspec.json.Encoder().encode


class UsageController(Controller):
    path = "/v1/workspaces/{workspace_id:str}/usage"
    tags = ["usage"]
    guards = [require_scope]
    opt = {"scope": "usage:read"}

    @get(operation_id="getUsage", summary="Usage of one workspace over [start, end)")
    async def usage(
        self,
        request: Request,
        workspace_id: FromPath[str],
        start: FromQuery[str | None] = None,
        end: FromQuery[str | None] = None,
        group_by: FromQuery[str | None] = None,
        window: FromQuery[str | None] = None,
        as_of: FromQuery[str | None] = None,
    ) -> Response[dict]:
        id_param("workspace_id", workspace_id)
        ensure_workspace(request.state.principal, workspace_id)
        start_us, end_us = range_params(start, end)
        groups = group_by_param(group_by)
        window = choice_param("window", window, WINDOWS)
        as_of_us = time_param("as_of", as_of)
        if as_of_us is None:
            as_of_us = now_us()

        db = request.app.state.db
        book = await request.app.state.prices.refresh(db)
        intervals, extensions = await read_usage_rows(db, workspace_id, start_us, end_us)
        span = dict(start=start_us, end=end_us, as_of=as_of_us, group_by=groups, window=window)
        head = {"workspace_id": workspace_id, "start": format_time(start_us), "end": format_time(end_us),
                "as_of": format_time(as_of_us), "currency": "USD"}
        rows = len(intervals) + len(extensions)
        if rows <= ROWS_ON_LOOP and rows * max(check_count(intervals, extensions, span), 1) <= PIECES_ON_LOOP:
            body = usage_answer(intervals, extensions, book, span, head, counted=True)
        else:
            body = await asyncio.to_thread(usage_answer, intervals, extensions, book, span, head, counted=False)
        return Response(body, media_type=MediaType.JSON)
