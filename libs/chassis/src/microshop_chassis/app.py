"""The app factory: a FastAPI app with health, readiness, metrics, messaging state, problem+json
and the edge middleware. The service host (host.py) builds every service's app with it; a test
may build one directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from opentelemetry import trace

from .auth import OperatorCaller, require_operator
from .errors import NOT_READY, install_problem_handlers, problem_response
from .limits import RequestLimits
from .messaging import MessagingReport, MessagingStatus
from .metrics import ServiceMetrics
from .middleware import QUIET_PATHS, EdgeMiddleware, LoadShedder
from .openapi import document_errors
from .provide import ServiceApp
from .resilience import CircuitBreaker, breaker_states
from .settings import ServiceSettings

ReadinessCheck = Callable[[], Awaitable[Any]]


def create_app(
    *,
    settings: ServiceSettings,
    version: str,
    instance: str = "",
    description: str = "",
    routers: Sequence[APIRouter] = (),
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    readiness: dict[str, ReadinessCheck] | None = None,
    draining: Callable[[], bool] = lambda: False,
    health_extra: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    messaging: MessagingReport | None = None,
    messaging_admin: bool = True,
    operator_metrics: bool = False,
    breakers: Callable[[], Iterable[CircuitBreaker]] = tuple,
    metrics: ServiceMetrics | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> ServiceApp:
    """``messaging_admin=False`` leaves out ``GET /admin/messaging`` (for an app that verifies no
    tokens and runs no relay or consumer: the gateway). ``operator_metrics``: ``/metrics`` asks for
    an admin or service token (the gateway's, whose port is public). ``readiness`` and ``breakers`` are read at
    each request, so parts added later are seen. While ``draining()`` is true (a graceful stop is
    under way) ``/ready`` answers 503 without running the checks."""
    metrics = metrics or ServiceMetrics()
    report = messaging or MessagingReport(settings.service_name, metrics)
    app = ServiceApp(
        title=f"microshop {settings.service_name}",
        version=version,
        description=description,
        lifespan=lifespan,
        # The edge middleware makes the one server span, the metrics and the access log; FastAPI's
        # own instrumentation (on once a tracer provider is set) would double each, per request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    install_problem_handlers(app)
    document_errors(app, unshed_paths=QUIET_PATHS)
    # Added first, so it runs inside the edge middleware: shed requests are still counted and logged.
    app.add_middleware(LoadShedder, limit=settings.max_in_flight, metrics=metrics)
    # Inside the edge middleware too (refusals are counted and logged), outside everything that reads.
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes,
                       max_header_bytes=settings.max_header_bytes)
    app.add_middleware(EdgeMiddleware, service=settings.service_name, metrics=metrics,
                       tracer_provider=tracer_provider, min_request_timeout=settings.min_request_timeout)
    checks = readiness if readiness is not None else {}

    @app.get("/health", tags=["operations"], summary="Liveness: the process serves requests")
    async def health() -> dict[str, Any]:
        body = {"status": "ok", "service": settings.service_name, "version": version,
                "instance": instance or settings.instance_name()}
        states = breaker_states(breakers())
        if states:  # the state of each downstream this service calls, seen from here
            body["circuit_breakers"] = states
        if health_extra:
            body.update(await health_extra())
        return body

    @app.get("/ready", tags=["operations"], summary="Readiness: database and broker reachable")
    async def ready() -> JSONResponse:
        if draining():  # so a balancer or a caller's discovery stops choosing this process
            return problem_response(NOT_READY("The service is draining: it finishes what it accepted, "
                                              "then stops; send new requests elsewhere.", draining=True))
        results = await asyncio.gather(*(_run_check(check) for check in checks.values()))
        report = dict(zip(checks, results, strict=True))
        if all(result == "ok" for result in report.values()):
            return JSONResponse({"status": "ready", "checks": report})
        return problem_response(NOT_READY("A dependency is not reachable.", checks=report))

    if messaging_admin:

        @app.get(
            "/admin/messaging",
            tags=["operations"],
            summary="Outbox backlog, consumer lag and dead letters of this service (admin or service)",
            responses={503: {"description": "The broker or the database cannot answer (problem+json)."}},
        )
        async def messaging(_: OperatorCaller) -> MessagingStatus:
            """Whether this service's events have drained: its outbox backlog (null without a
            relay), each durable consumer's JetStream state and the number of its events in the
            dead-letter stream. Answers within about 2 s; 503 when the broker is unreachable."""
            return await report.status()

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", include_in_schema=False,
             dependencies=[Depends(require_operator)] if operator_metrics else [])
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    for router in routers:
        app.include_router(router)
    return app


async def _run_check(check: ReadinessCheck, timeout: float = 2.0) -> str:
    try:
        await asyncio.wait_for(check(), timeout)
        return "ok"
    except Exception as exc:  # readiness reports any failure, whatever its kind
        return f"failing: {type(exc).__name__}: {exc}"[:200]
