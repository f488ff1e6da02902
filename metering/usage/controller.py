from __future__ import annotations

import asyncio
from functools import partial

from litestar import Controller, Request, get
from litestar.params import FromPath, FromQuery

from metering.api.auth import ensure_workspace, require_scope
from metering.api.params import choice_param, id_param, range_params, time_param
from metering.core.money import format_money, format_seconds, round_micro
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


PIECES_ON_LOOP = 5_000


def usage_items(intervals, extensions, book, span: dict) -> tuple[list[dict], dict]:  # type: ignore[no-untyped-def]
    buckets = aggregate(intervals, extensions, book, **span)
    items = []
    for key, bucket in buckets.items():
        item: dict = {name: (format_time(value) if name == "window_start" else value) for name, value in key}
        item.update(
            running_seconds=format_seconds(bucket.running_us),
            running_amount=format_money(round_micro(bucket.running)),
            extensions=bucket.extensions,
            extension_amount=format_money(round_micro(bucket.extension)),
            amount=format_money(round_micro(bucket.amount)),
        )
        items.append(item)
    return items, buckets


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
    ) -> dict:
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
        span = dict(start=start_us, end=end_us, as_of=as_of_us, lifetime=request.app.state.settings.lifetime.policy,
                    group_by=groups, window=window)
        count = count_items(intervals, extensions, **span)
        if count > MAX_ITEMS:
            raise Invalid(f"the query would answer more than {MAX_ITEMS} items; narrow it",
                          [field_error("use a longer window or a shorter range", "window"),
                           field_error("group by fewer fields", "group_by")])
        work = partial(usage_items, intervals, extensions, book, span)
        # Each row is priced in at most ``count`` pieces: past a few thousand pieces the work
        # goes to a thread, and the event loop answers meanwhile.
        pieces = (len(intervals) + len(extensions)) * max(count, 1)
        items, buckets = await asyncio.to_thread(work) if pieces > PIECES_ON_LOOP else work()
        return {
            "workspace_id": workspace_id,
            "start": format_time(start_us),
            "end": format_time(end_us),
            "as_of": format_time(as_of_us),
            "currency": "USD",
            "items": items,
            "total": format_money(round_micro(total(buckets))),
        }
