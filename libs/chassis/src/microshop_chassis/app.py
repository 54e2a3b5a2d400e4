"""The app factory: a FastAPI app with health, readiness, metrics, problem+json and the edge middleware.

A service passes its routers, its lifespan (what starts and stops with it) and its readiness
checks; everything else is the same in every service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response

from . import metrics
from .auth import OperatorCaller
from .errors import PROBLEM_JSON, install_problem_handlers
from .http_client import close_shared_session
from .logs import configure_logging
from .messaging import MessagingStatus, messaging_status
from .middleware import EdgeMiddleware, LoadShedder
from .resilience import breaker_states
from .settings import ServiceSettings
from .telemetry import configure_tracing

ReadinessCheck = Callable[[], Awaitable[Any]]


def create_app(
    *,
    settings: ServiceSettings,
    version: str,
    description: str = "",
    routers: Sequence[APIRouter] = (),
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    readiness: dict[str, ReadinessCheck] | None = None,
    health_extra: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    messaging_admin: bool = True,
) -> FastAPI:
    """``messaging_admin=False`` leaves out ``GET /admin/messaging`` (for an app that verifies no
    tokens and runs no relay or consumer: the gateway)."""
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    configure_tracing(settings.service_name, settings.traces_exporter, settings.data_dir)
    app = FastAPI(
        title=f"microshop {settings.service_name}",
        version=version,
        description=description,
        lifespan=_closing_shared_session(lifespan),
        # The edge middleware makes the one server span, the metrics and the access log; FastAPI's
        # own instrumentation (on once a tracer provider is set) would double each, per request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    install_problem_handlers(app)
    # Added first, so it runs inside the edge middleware: shed requests are still counted and logged.
    app.add_middleware(LoadShedder, limit=settings.max_in_flight)
    app.add_middleware(EdgeMiddleware)
    checks = readiness or {}

    @app.get("/health", tags=["operations"], summary="Liveness: the process serves requests")
    async def health() -> dict[str, Any]:
        body = {"status": "ok", "service": settings.service_name, "version": version}
        breakers = breaker_states()
        if breakers:  # the state of each downstream this service calls, seen from here
            body["circuit_breakers"] = breakers
        if health_extra:
            body.update(await health_extra())
        return body

    @app.get("/ready", tags=["operations"], summary="Readiness: database and broker reachable")
    async def ready() -> JSONResponse:
        results = await asyncio.gather(*(_run_check(check) for check in checks.values()))
        report = dict(zip(checks, results, strict=True))
        ok = all(result == "ok" for result in report.values())
        if ok:
            return JSONResponse({"status": "ready", "checks": report})
        return JSONResponse(
            {
                "type": "https://microshop.dev/problems/not-ready",
                "title": "Service Unavailable",
                "status": 503,
                "detail": "A dependency is not reachable.",
                "checks": report,
            },
            status_code=503,
            media_type=PROBLEM_JSON,
        )

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
            return await messaging_status(settings.service_name)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    for router in routers:
        app.include_router(router)
    return app


def _closing_shared_session(lifespan):
    """The service's own lifespan, then the process's pooled HTTP session closed after it: every
    service has one (JWKS fetches at least), so the chassis closes it rather than each service."""

    @asynccontextmanager
    async def wrapped(app: FastAPI):
        if lifespan is None:
            yield
        else:
            async with lifespan(app):
                yield
        await close_shared_session()

    return wrapped


async def _run_check(check: ReadinessCheck, timeout: float = 2.0) -> str:
    try:
        await asyncio.wait_for(check(), timeout)
        return "ok"
    except Exception as exc:  # readiness reports any failure, whatever its kind
        return f"failing: {type(exc).__name__}: {exc}"[:200]
