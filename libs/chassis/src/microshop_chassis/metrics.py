"""Prometheus metrics every service exposes at ``/metrics`` (RED: rate, errors, duration)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

# Buckets from 1 ms to 10 s: a checkout hop is a few ms, a stuck one several seconds.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "http_server_requests_total", "HTTP requests served.", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "http_server_request_duration_seconds",
    "Time to serve an HTTP request.",
    ["method", "route"],
    buckets=_BUCKETS,
)
REQUESTS_SHED = Counter(
    "http_server_requests_shed_total", "Requests answered 503 at once because too many were in progress."
)
HTTP_IN_FLIGHT = Gauge("http_server_requests_in_flight", "HTTP requests being served now.")
CLIENT_REQUESTS = Counter(
    "http_client_requests_total", "Calls made to other services.", ["target", "method", "outcome"]
)
CLIENT_DURATION = Histogram(
    "http_client_request_duration_seconds",
    "Duration of calls to other services.",
    ["target", "method"],
    buckets=_BUCKETS,
)
# Resilience of calls to other services (microshop_chassis.resilience), one series per target.
CIRCUIT_BREAKER_STATE = Gauge(
    "circuit_breaker_state", "Circuit breaker state per target: 0 closed, 1 half-open, 2 open.", ["target"]
)
CIRCUIT_BREAKER_TRANSITIONS = Counter(
    "circuit_breaker_transitions_total", "Circuit breaker state changes, by the state entered.", ["target", "state"]
)
CIRCUIT_BREAKER_REJECTED = Counter(
    "circuit_breaker_rejected_total", "Calls failed fast because the target's circuit was open.", ["target"]
)
BULKHEAD_IN_FLIGHT = Gauge("bulkhead_in_flight", "Calls to the target holding a bulkhead slot now.", ["target"])
BULKHEAD_REJECTED = Counter(
    "bulkhead_rejected_total", "Calls failed fast because the target's bulkhead was full.", ["target"]
)
RETRY_BUDGET_DENIED = Counter(
    "retry_budget_denied_total", "Retries skipped because the target's retry budget was spent.", ["target"]
)
OUTBOX_BACKLOG = Gauge("outbox_backlog", "Events written to the outbox and not yet published.")
OUTBOX_PUBLISHED = Counter("outbox_published_total", "Events the relay published to the broker.", ["type"])
CONSUMER_LAG = Gauge(
    "consumer_lag",
    "Messages of a durable consumer not yet delivered or not yet acked, as last read from JetStream.",
    ["consumer"],
)
EVENTS_CONSUMED = Counter(
    "events_consumed_total", "Events handled by a consumer.", ["consumer", "type", "outcome"]
)


def render() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
