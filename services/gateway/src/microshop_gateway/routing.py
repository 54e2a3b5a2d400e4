"""What the gateway's routes work with: the services behind it and how each is reached."""

from __future__ import annotations

from fastapi import Request, Response
from opentelemetry import trace

from microshop_chassis.discovery import Endpoints, FixedEndpoint
from microshop_chassis.errors import Problem
from microshop_chassis.http_client import HttpSession, ServiceClient
from microshop_chassis.metrics import ServiceMetrics
from microshop_chassis.telemetry import tracer

from .proxy import forward
from .public_api import PUBLIC_API, PublicRoute, is_public
from .settings import Upstream


class UnknownService(LookupError):
    def __init__(self, service: str, services: list[str]) -> None:
        super().__init__(f"There is no service named {service!r}.")
        self.service = service
        self.services = services


class DocumentUnavailable(Exception):
    def __init__(self, service: str) -> None:
        super().__init__(f"{service} did not give its OpenAPI document.")


class Gateway:
    def __init__(self, upstreams: dict[str, Upstream], *, session: HttpSession, metrics: ServiceMetrics,
                 upstream_timeout: float, documents: dict[str, ServiceClient],
                 public_api: dict[str, tuple[PublicRoute, ...]] = PUBLIC_API,
                 endpoints: dict[str, Endpoints] | None = None,
                 tracer_provider: trace.TracerProvider | None = None) -> None:
        self.upstreams = upstreams
        self.tracer = tracer("microshop.gateway", tracer_provider)  # once: not per forwarded request
        # Each service's replicas (discovery.py); by default its one configured URL.
        self.endpoints = endpoints or {name: FixedEndpoint(u.base_url) for name, u in upstreams.items()}
        self.public_api = public_api
        self.session = session
        self.metrics = metrics
        self.upstream_timeout = upstream_timeout
        self.documents = documents  # one client per service, for its OpenAPI document

    def upstream(self, service: str) -> Upstream:
        upstream = self.upstreams.get(service)
        if upstream is None:
            raise UnknownService(service, sorted(self.upstreams))
        return upstream

    async def forward(self, request: Request, service: str, path: str) -> Response:
        upstream = self.upstream(service)
        own_path = f"{upstream.resource_prefix}/{path}" if path else upstream.resource_prefix or "/"
        if not is_public(self.public_api, service, request.method, own_path):
            # The same answer as a path that does not exist: no hint that an internal one does.
            raise Problem(404, "Not Found")
        return await forward(request, upstream, path, self.upstream_timeout,
                             session=self.session, metrics=self.metrics, endpoints=self.endpoints[service],
                             span_tracer=self.tracer)

    async def openapi(self, service: str) -> dict:
        """The service's own document, limited to the paths the gateway exposes, with ``servers``
        set so that each path resolves to its public URL."""
        upstream = self.upstream(service)
        reply = await self.documents[service].get("/openapi.json")
        if reply.status != 200 or not isinstance(reply.body, dict):
            raise DocumentUnavailable(service)
        document = reply.body
        prefix = upstream.resource_prefix
        document["paths"] = {
            path: public for path, item in document.get("paths", {}).items()
            if (not prefix or path == prefix or path.startswith(prefix + "/"))
            and (public := self._public_operations(service, path, item))
        }
        document["servers"] = [{"url": upstream.forwarded_prefix}]
        return document

    def _public_operations(self, service: str, path: str, item: dict) -> dict:
        """The operations of one path item the gateway lets through (and its shared members)."""
        methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
        public = {key for key in item if key in methods and is_public(self.public_api, service, key.upper(), path)}
        return {key: value for key, value in item.items() if key not in methods or key in public} if public else {}
