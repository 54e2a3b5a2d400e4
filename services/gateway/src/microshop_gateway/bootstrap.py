"""The gateway's composition root. It keeps nothing durable: no database, no broker, and it
verifies no tokens (every service does that itself)."""

from __future__ import annotations

from microshop_chassis.host import ServiceHost

from . import __version__
from .api import ERRORS, router
from .health import system_health
from .routing import Gateway
from .settings import GatewaySettings

DESCRIPTION = "The one public entry: forwards /api/<service>/<path> and reports every service's health."


def build(settings: GatewaySettings | None = None) -> ServiceHost:
    settings = settings or GatewaySettings()
    host = ServiceHost(settings, version=__version__, description=DESCRIPTION, verifies_tokens=False)
    upstreams = settings.upstreams()
    # For each service's OpenAPI document (a page for people: no breaker to report on).
    documents = {name: host.client(name, upstream.base_url, authenticated=False, timeout=5, breaker=None)
                 for name, upstream in upstreams.items()}
    host.provide(Gateway, Gateway(upstreams, session=host.http, metrics=host.metrics,
                                  upstream_timeout=settings.upstream_timeout, documents=documents))
    host.health(system_health({n: u.base_url for n, u in upstreams.items()}, settings.health_timeout, host.http))
    host.routes(router, errors=ERRORS)
    return host
