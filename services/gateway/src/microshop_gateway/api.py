"""The gateway's HTTP API: an index and one route that forwards /api/<service>/<path>."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from microshop_chassis.errors import Problem
from microshop_chassis.http_client import ServiceClient

from .proxy import forward
from .settings import Upstream

router = APIRouter(tags=["gateway"])


@router.get("/", summary="Where each service's API and docs are")
async def index(request: Request) -> dict:
    services = request.app.state.upstreams
    return {
        "service": "gateway",
        "api": {name: f"/api/{name}/" for name in services},
        "docs": {name: f"/api/{name}/docs" for name in services},
    }


@router.get("/api/{service}/docs", include_in_schema=False)
async def service_docs(service: str, request: Request) -> HTMLResponse:
    """Swagger UI for one service, served by the gateway so "Try it out" goes through it."""
    upstream = _upstream(request, service)
    return get_swagger_ui_html(openapi_url=f"{upstream.public_prefix}/openapi.json",
                               title=f"microshop {service} API (via the gateway)")


@router.get("/api/{service}/openapi.json", summary="A service's OpenAPI document, as seen through the gateway")
async def service_openapi(service: str, request: Request) -> dict:
    """The service's own document, limited to the paths the gateway exposes, with `servers` set
    so that each path resolves to its public URL."""
    upstream = _upstream(request, service)
    reply = await ServiceClient(service, upstream.base_url, timeout=5).get("/openapi.json")
    if reply.status != 200 or not isinstance(reply.body, dict):
        raise Problem(502, f"{service} did not give its OpenAPI document.", type="upstream-bad-response")
    document = reply.body
    prefix = upstream.resource_prefix
    document["paths"] = {
        path: item for path, item in document.get("paths", {}).items()
        if not prefix or path == prefix or path.startswith(prefix + "/")
    }
    document["servers"] = [{"url": upstream.forwarded_prefix}]
    return document


def _upstream(request: Request, service: str) -> Upstream:
    upstream = request.app.state.upstreams.get(service)
    if upstream is None:
        raise Problem(404, f"There is no service named {service!r}.", type="unknown-service",
                      title="Unknown service", service=service, services=sorted(request.app.state.upstreams))
    return upstream


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
async def proxy(service: str, request: Request, path: str = "") -> Response:
    return await forward(request, _upstream(request, service), path, request.app.state.settings.upstream_timeout)
