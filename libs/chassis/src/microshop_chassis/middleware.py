"""One pure-ASGI middleware for the request edge: request id, server span, RED metrics, access log.

One middleware rather than three (an OTel instrumentation, a metrics one, a logging one) because
each BaseHTTPMiddleware-style layer costs a task and a copy per request on the hot path.
"""

from __future__ import annotations

import math
import time
import uuid
from contextlib import nullcontext

import structlog
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, SpanKind, Status, StatusCode
from starlette.requests import ClientDisconnect, Request

from .context import MIN_REQUEST_TIMEOUT, deadline_var, request_id_var, service_var
from .errors import OVERLOADED, problem_response
from .metrics import ServiceMetrics
from .telemetry import IDEMPOTENCY_KEY_ATTRIBUTE, ORDER_ID_ATTRIBUTE, extract_context, tracer

log = structlog.get_logger("microshop.http")

CLIENT_CLOSED_REQUEST = 499

# Paths probed often by the launcher and Prometheus: counted, not logged, not traced (a trace of
# one span a second per probe would bury the ones people look for, and use up the sampler's rate).
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})


class EdgeMiddleware:
    def __init__(self, app, *, service: str, metrics: ServiceMetrics,
                 tracer_provider: trace.TracerProvider | None = None,
                 min_request_timeout: float = MIN_REQUEST_TIMEOUT) -> None:
        self.app = app
        self.min_request_timeout = min_request_timeout
        self.service = service
        self.metrics = metrics
        self.tracer = tracer("microshop.http", tracer_provider)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        method = scope["method"]
        path = scope["path"]
        status_holder = [500]
        started = [False]
        disconnected = [False]
        authorized = "authorization" in headers

        async def receive_noting_disconnect():
            message = await receive()
            if message["type"] == "http.disconnect" and not started[0]:
                disconnected[0] = True
            return message

        async def send_with_id(message):
            if disconnected[0] and not started[0]:
                return  # nobody is listening; the outcome is counted as 499 below
            if message["type"] == "http.response.start":
                started[0] = True
                status_holder[0] = message["status"]
                message["headers"] = _with_edge_headers(message.get("headers", []), request_id, authorized)
            await send(message)

        rid_token = request_id_var.set(request_id)
        deadline_token = deadline_var.set(_deadline_from(headers, self.min_request_timeout))
        service_token = service_var.set(self.service)
        metrics = self.metrics
        metrics.http_in_flight.inc()
        start = time.perf_counter()
        with (nullcontext(INVALID_SPAN) if path in QUIET_PATHS else self.tracer.start_as_current_span(
            f"{method} {path}", context=extract_context(headers), kind=SpanKind.SERVER
        )) as span:
            try:
                await self.app(scope, receive_noting_disconnect, send_with_id)
            except ClientDisconnect:  # the client went away mid-body: not a server error
                disconnected[0] = True
            except Exception as exc:
                # Answered here, not by Starlette's ServerErrorMiddleware (which wraps this one): so
                # the 500 carries X-Request-ID and its unhandled_error log line the trace and request
                # ids, which are reset once this middleware returns.
                handler = getattr(scope.get("app"), "exception_handlers", {}).get(Exception)
                if started[0] or handler is None:
                    raise
                span.record_exception(exc)
                response = await handler(Request(scope, receive), exc)
                await response(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - start
                # nginx's 499: the client closed the connection before an answer was sent.
                status = CLIENT_CLOSED_REQUEST if disconnected[0] and not started[0] else status_holder[0]
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                order_id = (scope.get("path_params") or {}).get("order_id")
                if isinstance(order_id, str):  # /orders/{order_id}, /reservations/{order_id}, ...
                    span.set_attribute(ORDER_ID_ATTRIBUTE, order_id[:100])
                if "idempotency-key" in headers:  # find a client's retries of one request
                    span.set_attribute(IDEMPOTENCY_KEY_ATTRIBUTE, headers["idempotency-key"][:200])
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                metrics.http_in_flight.dec()
                metrics.series(metrics.http_requests, method, route, str(status)).inc()
                metrics.series(metrics.http_duration, method, route).observe(elapsed)
                if status == CLIENT_CLOSED_REQUEST:
                    log.info("client_disconnected", method=method, path=path,
                             duration_ms=round(elapsed * 1000, 2))
                elif path not in QUIET_PATHS:
                    log.info(
                        "request",
                        method=method,
                        path=path,
                        status=status,
                        duration_ms=round(elapsed * 1000, 2),
                    )
                request_id_var.reset(rid_token)
                deadline_var.reset(deadline_token)
                service_var.reset(service_token)


def _with_edge_headers(headers, request_id: str, authorized: bool) -> list[tuple[bytes, bytes]]:
    """The response headers plus the request id and the hygiene every answer carries: ``nosniff``,
    and ``Cache-Control: no-store`` on an answer to an authenticated request (whatever the route
    said) or on one that set no caching of its own (tokens, personal data)."""
    names = {name.lower() for name, _ in headers}
    added = [(b"x-request-id", request_id.encode())]
    if b"x-content-type-options" not in names:
        added.append((b"x-content-type-options", b"nosniff"))
    if authorized:
        headers = [(name, value) for name, value in headers if name.lower() != b"cache-control"]
        added.append((b"cache-control", b"no-store"))
    elif b"cache-control" not in names:
        added.append((b"cache-control", b"no-store"))
    return [*headers, *added]


def _deadline_from(headers: dict[str, str], floor: float = MIN_REQUEST_TIMEOUT) -> float | None:
    """A caller may send ``X-Request-Timeout`` (seconds left); we turn it into a local deadline,
    never closer than ``floor`` seconds: a client with a 30 ms deadline must not make this service's
    calls to others time out in bulk and open the circuit breakers every customer shares. (Nothing
    tells an outside client from a service here, before authentication, so the floor applies to
    every caller; it only lengthens how long a call may take, which the caller bounds anyway.)"""
    raw = headers.get("x-request-timeout")
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    if not math.isfinite(seconds):  # "nan", "inf": no usable deadline
        return None
    return time.monotonic() + max(floor, seconds)


class LoadShedder:
    """Over ``limit`` requests in progress, answer 503 at once, with ``Retry-After``, instead of
    queueing without bound: a caller learns in microseconds to come back later (or to go to another
    replica), and the requests already accepted keep their latency. Health, readiness and metrics
    are never shed, so an overloaded service still looks alive to its supervisor."""

    def __init__(self, app, *, limit: int, metrics: ServiceMetrics) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in QUIET_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.metrics.requests_shed.inc()
            response = problem_response(OVERLOADED(f"More than {self.limit} requests in progress; retry shortly."))
            await response(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
