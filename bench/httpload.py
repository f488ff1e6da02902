"""A small HTTP/1.1 load generator, run as its own process (``python -m bench.httpload``).

Keep-alive connections over asyncio streams, no client library in the way: a request costs
the client a few tens of microseconds, so the client does not steal the server's CPU (the
server and the client share the machine).  Two modes, both bounded in count and time:

- ``batches``: POST pre-built bodies, ``--concurrency`` in flight, report events/s;
- ``rate``: POST one event per request on a fixed schedule (open loop: a late response
  does not delay the next request), report latency percentiles measured from the
  scheduled send time, so a stall is counted for every request it delays.

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import msgspec


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer, f"{parts.hostname}:{parts.port}")

    async def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def run_batches(url: str, token: str, bodies: list[bytes], events_per_body: list[int], concurrency: int,
                      timeout: float) -> dict:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/cloudevents-batch+json"}
    queue = list(zip(bodies, events_per_body))
    queue.reverse()
    latencies: list[float] = []
    accepted = 0
    errors: list[str] = []

    async def worker() -> None:
        nonlocal accepted
        conn = await Connection.open(url)
        try:
            while queue:
                body, _ = queue.pop()
                began = time.perf_counter()
                status, reply = await conn.request("POST", "/v1/events", body, headers)
                latencies.append(time.perf_counter() - began)
                if status != 202:
                    errors.append(f"{status}: {reply[:200]!r}")
                else:
                    accepted += json.loads(reply)["accepted"]
        finally:
            conn.close()

    began = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout)
    elapsed = time.perf_counter() - began
    total = sum(events_per_body)
    return {"events": total, "accepted": accepted, "seconds": round(elapsed, 3),
            "events_per_second": round(total / elapsed), "requests": len(bodies),
            "batch_latency_ms": _percentiles(latencies), "errors": errors[:5], "error_count": len(errors)}


async def run_rate(url: str, token: str, bodies: list[bytes], rate: float, connections: int, timeout: float) -> dict:
    """Open loop: request i is due at ``start + i / rate``, whatever happened before it."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/cloudevents+json"}
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(url))
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter() + 0.05

    async def one(i: int, body: bytes) -> None:
        due = start + i / rate
        conn = await pool.get()  # waiting for a free connection counts as latency
        try:
            status, reply = await conn.request("POST", "/v1/events", body, headers)
        finally:
            pool.put_nowait(conn)
        latencies.append(time.perf_counter() - due)
        if status != 202:
            errors.append(f"{status}: {reply[:200]!r}")

    tasks = []
    for i, body in enumerate(bodies):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, body)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait().close()
    return {"requests": len(bodies), "target_rate": rate, "achieved_rate": round(len(bodies) / elapsed, 1),
            "seconds": round(elapsed, 3), "latency_ms": _percentiles(latencies), "errors": errors[:5],
            "error_count": len(errors)}


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": round(ordered[-1] * 1000, 3),
            "mean": round(sum(ordered) / len(ordered) * 1000, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description="bounded HTTP load for the metering benchmarks")
    parser.add_argument("mode", choices=["batches", "rate"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--bodies", required=True, help="a file of msgpack-encoded [body, ...] (bench.run writes it)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    bodies, counts = msgspec.msgpack.decode(Path(args.bodies).read_bytes())
    try:  # a cheaper event loop leaves more of the shared CPU to the server
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.mode == "batches":
        result = asyncio.run(run_batches(args.url, args.token, bodies, counts, args.concurrency, args.timeout))
    else:
        result = asyncio.run(run_rate(args.url, args.token, bodies, args.rate, args.connections, args.timeout))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
