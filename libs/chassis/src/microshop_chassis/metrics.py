"""Prometheus metrics a service exposes at ``/metrics`` (RED: rate, errors, duration).

Each service instance has a registry of its own, so two services built in one process (the tests,
a monolith) each report their own figures. A part that counts something takes the service's
``ServiceMetrics``; built on its own (in a test), it gets a private one.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Buckets from 1 ms to 10 s: a checkout hop is a few ms, a stuck one several seconds.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    def __init__(self, *, process: bool = False) -> None:
        """``process=True`` adds the process, platform and GC figures of the process the service
        runs in (what prometheus-client's default registry shows)."""
        self.registry = CollectorRegistry(auto_describe=True)
        self._series: dict[tuple, Any] = {}
        if process:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
        self.http_requests = self.counter(
            "http_server_requests_total", "HTTP requests served.", ["method", "route", "status"])
        self.http_duration = self.histogram(
            "http_server_request_duration_seconds", "Time to serve an HTTP request.", ["method", "route"])
        self.requests_shed = self.counter(
            "http_server_requests_shed_total", "Requests answered 503 at once because too many were in progress.")
        self.http_in_flight = self.gauge("http_server_requests_in_flight", "HTTP requests being served now.")
        self.client_requests = self.counter(
            "http_client_requests_total", "Calls made to other services.", ["target", "method", "outcome"])
        self.client_duration = self.histogram(
            "http_client_request_duration_seconds", "Duration of calls to other services.", ["target", "method"])
        # Resilience of calls to other services (resilience.py), one series per target.
        self.breaker_state = self.gauge(
            "circuit_breaker_state", "Circuit breaker state per target: 0 closed, 1 half-open, 2 open.", ["target"])
        self.breaker_transitions = self.counter(
            "circuit_breaker_transitions_total", "Circuit breaker state changes, by the state entered.",
            ["target", "state"])
        self.breaker_rejected = self.counter(
            "circuit_breaker_rejected_total", "Calls failed fast because the target's circuit was open.", ["target"])
        self.bulkhead_in_flight = self.gauge(
            "bulkhead_in_flight", "Calls to the target holding a bulkhead slot now.", ["target"])
        self.bulkhead_rejected = self.counter(
            "bulkhead_rejected_total", "Calls failed fast because the target's bulkhead was full.", ["target"])
        self.retry_budget_denied = self.counter(
            "retry_budget_denied_total", "Retries skipped because the target's retry budget was spent.", ["target"])
        self.outbox_backlog = self.gauge("outbox_backlog", "Events written to the outbox and not yet published.")
        self.outbox_oldest_age = self.gauge(
            "outbox_oldest_event_age_seconds", "Age of the oldest event not yet published; 0 when none.")
        self.outbox_published = self.counter(
            "outbox_published_total", "Events the relay published to the broker.", ["type"])
        self.consumer_lag = self.gauge(
            "consumer_lag",
            "Messages of a durable consumer not yet delivered or not yet acked, as last read from JetStream.",
            ["consumer"])
        self.events_consumed = self.counter(
            "events_consumed_total", "Events handled by a consumer.", ["consumer", "type", "outcome"])

    def series(self, metric, *labels: str):
        """``metric.labels(*labels)``, remembered: prometheus-client checks the values and takes a
        lock on every call to ``labels()``, a few µs each, several times a request. The label
        values on the hot paths are few (routes, methods, statuses, targets)."""
        key = (metric, labels)
        try:
            return self._series[key]
        except KeyError:
            child = self._series[key] = metric.labels(*labels)
            return child

    def counter(self, name: str, documentation: str, labels: list[str] | None = None) -> Counter:
        return Counter(name, documentation, labels or [], registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: list[str] | None = None) -> Gauge:
        return Gauge(name, documentation, labels or [], registry=self.registry)

    def histogram(self, name: str, documentation: str, labels: list[str] | None = None) -> Histogram:
        return Histogram(name, documentation, labels or [], buckets=_BUCKETS, registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's current value (for tests and status tools)."""
        return self.registry.get_sample_value(name, labels or {})
