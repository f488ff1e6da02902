"""``python -m tests.hardening.loop_probe URL``: probe ``URL/health/live`` every 10 ms until
stdin closes, then print the latencies (ms) as a JSON list.

A process of its own, so that the test's other client (sending and receiving megabytes,
holding its own GIL) never delays a probe.  One probe at a time, on one connection: a probe
that waits ``L`` ms stands for the ``L / 10`` probes that would have been sent meanwhile,
which are counted as well, each with what it would have waited (``L - 10``, ``L - 20``, ...,
as HdrHistogram's expected-interval correction does).  Counted only once, a one-second stall
would be one slow sample among a hundred missing ones.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import httpx

PERIOD_MS = 10


def main(url: str) -> None:
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        client.get("/health/live").raise_for_status()  # the connection is open before the clock starts
        print("ready", flush=True)
        while not stop.is_set():
            started = time.perf_counter()
            client.get("/health/live").raise_for_status()
            waited = (time.perf_counter() - started) * 1000
            latencies.append(waited)
            missed = waited - PERIOD_MS
            while missed > 0:  # the probes due while this one waited
                latencies.append(missed)
                missed -= PERIOD_MS
            time.sleep(max(0.0, started + PERIOD_MS / 1000 - time.perf_counter()))
    print(json.dumps(latencies), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
