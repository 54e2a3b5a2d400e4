"""One pure-ASGI middleware for the request edge: request id, server span, RED metrics, access log.

One middleware rather than three (an OTel instrumentation, a metrics one, a logging one) because
each BaseHTTPMiddleware-style layer costs a task and a copy per request on the hot path.
"""

from __future__ import annotations

import json
import time
import uuid

import structlog
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.requests import Request

from . import metrics
from .context import deadline_var, request_id_var
from .telemetry import extract_context, tracer

log = structlog.get_logger("microshop.http")

# Paths probed often by the launcher and Prometheus: counted, not logged.
_QUIET = {"/health", "/ready", "/metrics"}


class EdgeMiddleware:
    def __init__(self, app) -> None:
        self.app = app
        self.tracer = tracer("microshop.http")

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

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                started[0] = True
                status_holder[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        rid_token = request_id_var.set(request_id)
        deadline_token = deadline_var.set(_deadline_from(headers))
        metrics.HTTP_IN_FLIGHT.inc()
        start = time.perf_counter()
        with self.tracer.start_as_current_span(
            f"{method} {path}", context=extract_context(headers), kind=SpanKind.SERVER
        ) as span:
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                # Fix: an unhandled exception was answered by Starlette's ServerErrorMiddleware, which
                # wraps this middleware, so that 500 left without X-Request-ID and its unhandled_error
                # log line carried no trace or request id (both reset by then). Run the app's own
                # Exception handler (errors.install_problem_handlers) here, inside both.
                handler = getattr(scope.get("app"), "exception_handlers", {}).get(Exception)
                if started[0] or handler is None:
                    raise
                span.record_exception(exc)
                response = await handler(Request(scope, receive), exc)
                await response(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - start
                status = status_holder[0]
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                metrics.HTTP_IN_FLIGHT.dec()
                metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
                metrics.HTTP_DURATION.labels(method, route).observe(elapsed)
                if path not in _QUIET:
                    log.info(
                        "request",
                        method=method,
                        path=path,
                        status=status,
                        duration_ms=round(elapsed * 1000, 2),
                    )
                request_id_var.reset(rid_token)
                deadline_var.reset(deadline_token)


def _deadline_from(headers: dict[str, str]) -> float | None:
    """A caller may send ``X-Request-Timeout`` (seconds left); we turn it into a local deadline."""
    raw = headers.get("x-request-timeout")
    if not raw:
        return None
    try:
        return time.monotonic() + max(0.0, float(raw))
    except ValueError:
        return None


class LoadShedder:
    """Over ``limit`` requests in progress, answer 503 at once, with ``Retry-After``, instead of
    queueing without bound: a caller learns in microseconds to come back later (or to go to another
    replica), and the requests already accepted keep their latency. Health, readiness and metrics
    are never shed, so an overloaded service still looks alive to its supervisor."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in _QUIET:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            metrics.REQUESTS_SHED.inc()
            body = json.dumps({
                "type": "https://microshop.dev/problems/overloaded",
                "title": "Service Unavailable",
                "status": 503,
                "detail": f"More than {self.limit} requests in progress; retry shortly.",
            }).encode()
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/problem+json"),
                (b"retry-after", b"1"),
                (b"content-length", str(len(body)).encode()),
            ]})
            await send({"type": "http.response.body", "body": body})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
