from __future__ import annotations

import asyncio
from collections.abc import Iterator

import msgspec
from litestar import Controller, MediaType, Request, Response, get
from litestar.params import FromPath, FromQuery

from metering.api.auth import ensure_workspace, require_scope
from metering.api.params import choice_param, id_param, range_params, time_param
from metering.core.money import format_money, format_seconds, round_micro, round_ratio
from metering.core.periods import WINDOWS, next_boundary
from metering.core.pricing import PriceBook
from metering.core.timeutil import format_time
from metering.db.base import now_us
from metering.errors import Invalid, field_error
from metering.usage.compute import (
    GROUP_FIELDS,
    MAX_ITEMS,
    Bucket,
    GroupKey,
    aggregate,
    clip,
    count_items,
    items_at_most,
    total,
    window_index,
)
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


# A usage answer is made on the event loop in pieces of about this many priced pieces (a
# row's share of one window) or items, with the loop free between them: at once, 10,000
# items held it for over 100 ms on a loaded machine, and on a thread the loop waited for
# the GIL at every step, as long as the machine's other processes kept that thread waiting.
# (With both cores busy, /health/live's 95th percentile during the largest answers was
# 40-47 ms with pieces of 500, 24-29 ms with pieces of 100.)
PIECE_WORK = 100


def item_of(key: GroupKey, bucket: Bucket) -> dict:
    item: dict = {name: (format_time(value) if name == "window_start" else value) for name, value in key}
    # Each amount is an integer over the tariff's scale (usage.compute.Bucket): rounded from
    # there, as round_micro would round its Fraction.
    running, extension, scale = bucket.running_scaled, bucket.extension_scaled, bucket.scale
    item.update(
        running_seconds=format_seconds(bucket.running_us),
        running_amount=format_money(round_ratio(running, scale)),
        extensions=bucket.extensions,
        extension_amount=format_money(round_ratio(extension, scale)),
        amount=format_money(round_ratio(running + extension, scale)),
    )
    return item


def check_count(intervals, extensions, span: dict) -> None:  # type: ignore[no-untyped-def]
    """422 if the query would answer more than ``MAX_ITEMS`` items (counted exactly only when
    the cheap bound is over)."""
    if items_at_most(intervals, extensions, **span) > MAX_ITEMS and count_items(intervals, extensions, **span) > MAX_ITEMS:
        raise Invalid(f"the query would answer more than {MAX_ITEMS} items; narrow it",
                      [field_error("use a longer window or a shorter range", "window"),
                       field_error("group by fewer fields", "group_by")])


def aggregate_parts(intervals: list, extensions: list, span: dict) -> Iterator[tuple[list, list, dict]]:
    """``aggregate``'s arguments cut in parts of about ``PIECE_WORK`` priced pieces: the rows
    in slices, and a row that spans more windows than that on its own, its span cut at window
    boundaries.  Every piece of usage falls in exactly one part, so the parts' buckets add up
    to the whole's (``merge``)."""
    if not span["window"]:  # every row is one priced piece (or none): plain slices
        for lo in range(0, len(intervals), PIECE_WORK):
            yield intervals[lo:lo + PIECE_WORK], [], span
    else:
        yield from _window_parts(intervals, span)
    for lo in range(0, len(extensions), PIECE_WORK):
        yield [], extensions[lo:lo + PIECE_WORK], span


def _window_parts(intervals: list, span: dict) -> Iterator[tuple[list, list, dict]]:
    """The intervals' parts when each row counts as many pieces as the windows it spans."""
    start, end, as_of, window = span["start"], span["end"], span["as_of"], span["window"]
    rows: list = []
    work = 0
    for iv in intervals:
        clipped = clip(iv, start, end, as_of, span["lifetime"])
        if clipped is None:
            continue
        windows = window_index(clipped[1] - 1, window) - window_index(clipped[0], window) + 1
        if windows > PIECE_WORK:  # one long row: alone, a few hundred windows at a time
            lo = clipped[0]
            while lo < clipped[1]:
                hi = lo
                for _ in range(PIECE_WORK):
                    hi = next_boundary(hi, window)
                yield [iv], [], {**span, "start": lo, "end": min(hi, clipped[1])}
                lo = hi
            continue
        rows.append(iv)
        work += windows
        if work >= PIECE_WORK:
            yield rows, [], span
            rows, work = [], 0
    if rows:
        yield rows, [], span


def merge(into: dict[GroupKey, Bucket], buckets: dict[GroupKey, Bucket]) -> None:
    for key, bucket in buckets.items():
        found = into.get(key)
        if found is None:
            into[key] = bucket
        else:
            found.add(bucket)


async def usage_answer(intervals: list, extensions: list, book: PriceBook, span: dict, head: dict) -> bytes:
    """The whole answer's JSON (``head``, the items, their total), made in pieces; 422 if it
    would have too many items."""
    check_count(intervals, extensions, span)
    buckets: dict[GroupKey, Bucket] = {}
    for ivs, exts, part in aggregate_parts(intervals, extensions, span):
        await asyncio.sleep(0)
        merge(buckets, aggregate(ivs, exts, book, **part))
    keys = sorted(buckets)
    items: list[bytes] = []
    for lo in range(0, len(keys), PIECE_WORK):
        await asyncio.sleep(0)
        items.append(_encode([item_of(key, buckets[key]) for key in keys[lo:lo + PIECE_WORK]])[1:-1])
    answer = {**head, "items": msgspec.Raw(b"[" + b",".join(items) + b"]"),
              "total": format_money(round_micro(total(buckets)))}
    return _encode(answer)


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
        span = dict(start=start_us, end=end_us, as_of=as_of_us, lifetime=request.app.state.settings.lifetime.policy,
                    group_by=groups, window=window)
        head = {"workspace_id": workspace_id, "start": format_time(start_us), "end": format_time(end_us),
                "as_of": format_time(as_of_us), "currency": "USD"}
        return Response(await usage_answer(intervals, extensions, book, span, head), media_type=MediaType.JSON)
