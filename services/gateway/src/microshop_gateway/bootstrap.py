"""The composition root: builds the gateway's app. It keeps nothing durable: no database, no broker."""

from __future__ import annotations

from fastapi import FastAPI

from microshop_chassis.app import create_app as create_service_app

from . import __version__
from .api import router
from .health import system_health
from .settings import GatewaySettings


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    upstreams = settings.upstreams()

    app = create_service_app(
        settings=settings,
        version=__version__,
        description="The one public entry: forwards /api/<service>/<path> and reports every service's health.",
        routers=[router],
        readiness={},  # nothing of its own to wait for; /health reports on the services
        health_extra=system_health({n: u.base_url for n, u in upstreams.items()}, settings.health_timeout),
        messaging_admin=False,  # no relay, no consumers, no token verifier
    )
    app.state.settings = settings
    app.state.upstreams = upstreams
    return app

