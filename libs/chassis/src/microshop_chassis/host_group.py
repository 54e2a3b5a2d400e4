"""Several services in one process, behind one of them (the monolith: ``microshop up --monolith``).

Each service is still its own ``ServiceHost`` with its own settings, database, outbox, consumers,
metrics and tracer, built by its own bootstrap: the group only puts them side by side.

- The public service (the gateway) is the one served on a port; the others are reached through
  it, and by one another, in-process: their callers' ``HttpSession`` hands a request for one of
  their URLs to its app directly (in_process.py).
- At start the services start in the order given, the public one last, so nothing is served
  before what it calls is ready; at stop they stop in reverse, each draining as it would alone.
- A stop (SIGTERM) drains every service at once: readiness answers 503, consumers stop fetching.
- Operators still see each service: ``/_services/<name>/health`` and ``/ready`` on the public
  port (and users' public keys at ``/_services/users/.well-known/jwks.json``), and with an admin
  or service token (like the public /metrics) its ``/metrics`` and any other GET (its admin
  reads: what `microshop verify` checks). Nothing but reads, and nothing without that token:
  customers reach a service only through the public service's routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import APIRouter, Depends, Request, Response

from .auth import require_operator
from .errors import ProblemType
from .host import ServiceHost
from .in_process import LocalApps

UNKNOWN_SERVICE = ProblemType("unknown-service", 404, "No such service in this process")


class HostGroup:
    def __init__(self, public: ServiceHost, inner: Sequence[ServiceHost], *, name: str = "monolith") -> None:
        self.public = public
        self.inner = list(inner)
        self.name = name
        self.settings = public.settings
        self.local = LocalApps()
        for host in self.inner:
            self.local.add(host.settings.own_url(), host.app)
        for host in self.hosts:
            host.http.serve_in_process(self.local)
        # The public /ready answers for all: ready when every service in the process is.
        for host in self.inner:
            for check_name, check in host.readiness_checks.items():
                public.readiness(f"{host.name}.{check_name}", check)
        public.routes(self._operations())
        self.app = _GroupApp(self)

    @property
    def hosts(self) -> list[ServiceHost]:
        """Every service of the group, in start order."""
        return [*self.inner, self.public]

    def begin_drain(self) -> None:
        for host in self.hosts:
            host.begin_drain()

    def drain_time_left(self) -> float:
        return max(host.drain_time_left() for host in self.hosts)

    def _operations(self) -> APIRouter:
        router = APIRouter(prefix="/_services/{name}", tags=["operations"], include_in_schema=False)
        by_name = {host.name: host for host in self.inner}

        def inner(name: str) -> ServiceHost:
            if name not in by_name:
                raise UNKNOWN_SERVICE(f"This process runs {', '.join(by_name)}; not {name!r}.")
            return by_name[name]

        @router.get("/health")
        async def health(name: str) -> Response:
            return await self._read(inner(name), "/health", None)

        @router.get("/ready")
        async def ready(name: str) -> Response:
            return await self._read(inner(name), "/ready", None)

        # Public keys: for a service running outside the process (reports beside monolith workers).
        @router.get("/.well-known/jwks.json")
        async def jwks(name: str) -> Response:
            return await self._read(inner(name), "/.well-known/jwks.json", None)

        # Anything else (its /metrics, its admin reads) only for an operator, as the public /metrics.
        @router.get("/{path:path}", dependencies=[Depends(require_operator)])
        async def read(name: str, path: str, request: Request) -> Response:
            return await self._read(inner(name), "/" + path, request)

        return router

    async def _read(self, host: ServiceHost, path: str, request: Request | None) -> Response:
        """A GET answered by ``host`` in-process, with the caller's query and token."""
        headers = {"Authorization": request.headers["authorization"]} if request is not None else {}
        url = host.settings.own_url() + path + (f"?{request.url.query}" if request is not None and request.url.query
                                                  else "")
        async with self.public.http.get().get(url, headers=headers) as answer:
            return Response(await answer.read(), status_code=answer.status,
                            media_type=answer.headers.get("Content-Type"))

    @asynccontextmanager
    async def lifespan(self):
        async with AsyncExitStack() as started:
            for host in self.hosts:
                await started.enter_async_context(host.app.router.lifespan_context(host.app))
            yield


class _GroupApp:
    """The public service's app, whose lifespan is the whole group's."""

    def __init__(self, group: HostGroup) -> None:
        self.group = group

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "lifespan":
            await self.group.public.app(scope, receive, send)
            return
        await _run_lifespan(self.group, receive, send)


async def _run_lifespan(group: HostGroup, receive, send) -> None:
    """The ASGI lifespan protocol around ``group.lifespan()``, as Starlette runs an app's."""
    await receive()  # lifespan.startup
    started = False
    try:
        async with group.lifespan():
            started = True
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
    except BaseException as exc:
        failed = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
        await send({"type": failed, "message": f"{type(exc).__name__}: {exc}"})
        raise
    await send({"type": "lifespan.shutdown.complete"})
