"""Prometheus metrics, one registry per app so tests can build several apps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_accepted = Counter(
            "metering_events_accepted", "Events stored by POST /v1/events", registry=self.registry
        )
        self.events_duplicate = Counter(
            "metering_events_duplicate", "Events already stored, counted and skipped", registry=self.registry
        )
        self.events_rejected = Counter(
            "metering_events_rejected", "Batches refused with a 4xx", ["status"], registry=self.registry
        )
        self.requests = Histogram(
            "metering_http_request_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
