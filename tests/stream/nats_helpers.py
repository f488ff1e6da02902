"""A stream of its own per test on the real NATS server (127.0.0.1:4222), and ways to feed and read it."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import msgspec
import nats
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from metering.settings import NatsSettings

NATS_URL = "nats://127.0.0.1:4222"


def unique_config(**changes) -> NatsSettings:
    """Stream, subjects, durable and dead-letter subject no other test (or run) uses."""
    tag = secrets.token_hex(4)
    return NatsSettings(url=NATS_URL, stream=f"T_{tag}", subjects=[f"t{tag}.events.>"], durable=f"d{tag}",
                        dead_letter_subject=f"t{tag}.dead", **changes)


def env_for(cfg: NatsSettings) -> dict[str, str]:
    """The same configuration as ``METERING_INGEST__NATS__*`` variables, for a child process."""
    out = {f"METERING_INGEST__NATS__{name.upper()}": str(getattr(cfg, name))
           for name in ("url", "stream", "durable", "dead_letter_subject", "batch_size", "ack_wait_seconds")}
    out["METERING_INGEST__NATS__SUBJECTS"] = msgspec.json.encode(cfg.subjects).decode()
    return out


def subject(cfg: NatsSettings, name: str = "sandbox") -> str:
    return cfg.subjects[0].replace(">", name)


async def publish(cfg: NatsSettings, messages: list[tuple[bytes, dict[str, str] | None]]) -> None:
    """Publish through JetStream (the stream exists, made by ``ensure_stream``), waiting for every ack."""
    async with jetstream(cfg) as js:
        for start in range(0, len(messages), 2000):
            acks = [await js.publish_async(subject(cfg), body, headers=headers)
                    for body, headers in messages[start:start + 2000]]
            await asyncio.gather(*acks)


@asynccontextmanager
async def jetstream(cfg: NatsSettings) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(cfg.url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def ensure_stream(cfg: NatsSettings) -> None:
    async with jetstream(cfg) as js:
        await js.add_stream(name=cfg.stream, subjects=cfg.subjects)


async def dead_letters(cfg: NatsSettings) -> list[tuple[bytes, dict[str, str]]]:
    async with jetstream(cfg) as js:
        sub = await js.pull_subscribe(cfg.dead_letter_subject, stream=f"{cfg.stream}_DEAD_LETTER")
        out = []
        while True:
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except TimeoutError:
                return out
            out += [(m.data, dict(m.headers or {})) for m in msgs]
            for m in msgs:
                await m.ack()


async def pending(cfg: NatsSettings) -> tuple[int, int]:
    """(not yet delivered, delivered but not acknowledged) for the durable consumer."""
    async with jetstream(cfg) as js:
        try:
            info = await js.consumer_info(cfg.stream, cfg.durable)
        except NotFoundError:  # not made yet: everything is to come
            return -1, -1
        return info.num_pending, info.num_ack_pending


async def drop(cfg: NatsSettings) -> None:
    async with jetstream(cfg) as js:
        for name in (cfg.stream, f"{cfg.stream}_DEAD_LETTER"):
            try:
                await js.delete_stream(name)
            except NotFoundError:
                pass


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)
