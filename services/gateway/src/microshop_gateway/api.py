"""The gateway's HTTP API: an index and one route that forwards /api/<service>/<path>."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from microshop_chassis.downstream import ServiceUnavailable
from microshop_chassis.errors import ProblemMap, ProblemType
from microshop_chassis.provide import Provide

from .proxy import UPSTREAM_BAD_RESPONSE, UPSTREAM_UNAVAILABLE
from .routing import DocumentUnavailable, Gateway, UnknownService

UNKNOWN_SERVICE = ProblemType("unknown-service", 404, "Unknown service")

ERRORS: ProblemMap = {
    UnknownService: UNKNOWN_SERVICE,
    DocumentUnavailable: UPSTREAM_BAD_RESPONSE,
    ServiceUnavailable: UPSTREAM_UNAVAILABLE,
}

router = APIRouter(tags=["gateway"])
GatewayDep = Annotated[Gateway, Provide(Gateway)]


@router.get("/", summary="Where each service's API and docs are")
async def index(gateway: GatewayDep) -> dict:
    services = gateway.upstreams
    return {
        "service": "gateway",
        "api": {name: f"/api/{name}/" for name in services},
        "docs": {name: f"/api/{name}/docs" for name in services},
    }


@router.get("/api/{service}/docs", include_in_schema=False)
async def service_docs(service: str, gateway: GatewayDep) -> HTMLResponse:
    """Swagger UI for one service, served by the gateway so "Try it out" goes through it."""
    upstream = gateway.upstream(service)
    return get_swagger_ui_html(openapi_url=f"{upstream.public_prefix}/openapi.json",
                               title=f"microshop {service} API (via the gateway)")


@router.get("/api/{service}/openapi.json", summary="A service's OpenAPI document, as seen through the gateway")
async def service_openapi(service: str, gateway: GatewayDep) -> dict:
    """The service's own document, limited to the paths the gateway exposes, with `servers` set
    so that each path resolves to its public URL."""
    return await gateway.openapi(service)


@router.api_route(
    "/api/{service}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
@router.api_route(
    "/api/{service}/{path:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    # Not in the gateway's own OpenAPI: one operation under five methods gets no stable id there;
    # each service's document, served at /api/<service>/openapi.json, describes what lies behind.
    include_in_schema=False,
    summary="Forward to a service: /api/<service>/<path> goes to that service (see RESOURCE_PREFIX)",
    responses={
        404: {"description": "No such service"},
        503: {"description": "The service is not reachable (Retry-After: 1)"},
        504: {"description": "The service did not answer within upstream_timeout"},
    },
)
async def proxy(service: str, request: Request, gateway: GatewayDep, path: str = "") -> Response:
    return await gateway.forward(request, service, path)
