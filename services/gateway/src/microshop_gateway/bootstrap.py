"""The gateway's composition root. It keeps nothing durable: no database, no broker, and it
verifies no tokens for the requests it forwards (every service does that itself); only its own
``/metrics`` asks for an admin or service token."""

from __future__ import annotations

from microshop_chassis.auth import JwtVerifier
from microshop_chassis.host import ServiceHost

from . import __version__
from .api import ERRORS, router
from .health import system_health
from .public_api import PUBLIC_API, PublicRoute
from .routing import Gateway
from .settings import GatewaySettings

DESCRIPTION = "The one public entry: forwards /api/<service>/<path> and reports every service's health."


def build(settings: GatewaySettings | None = None, *, verifier: JwtVerifier | None = None,
          public_api: dict[str, tuple[PublicRoute, ...]] = PUBLIC_API) -> ServiceHost:
    """``public_api``: what is let through (tests of the proxy itself pass their own table)."""
    settings = settings or GatewaySettings()
    # Its port is the public one: its metrics (paths, callers' traffic) are for operators.
    host = ServiceHost(settings, version=__version__, description=DESCRIPTION, verifier=verifier,
                       verifies_tokens=False, operator_metrics=True)
    upstreams = settings.upstreams()
    # For each service's OpenAPI document (a page for people: no breaker to report on).
    documents = {name: host.client(name, upstream.base_url, authenticated=False, timeout=5, breaker=None)
                 for name, upstream in upstreams.items()}
    endpoints = {name: host.endpoints(name, upstream.base_url) for name, upstream in upstreams.items()}
    host.provide(Gateway, Gateway(upstreams, session=host.http, metrics=host.metrics,
                                  upstream_timeout=settings.upstream_timeout, documents=documents,
                                  public_api=public_api, endpoints=endpoints,
                                  tracer_provider=host.tracer_provider))
    host.health(system_health(endpoints, settings.health_timeout, host.http))
    host.routes(router, errors=ERRORS)
    return host
