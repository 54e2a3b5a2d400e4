"""The composition root: builds inventory's app and wires its database and expiry sweeper.

inventory publishes and consumes no events, so it has no broker, relay or consumers, and its
readiness is its database alone.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from microshop_chassis.app import create_app as create_service_app
from microshop_chassis.auth import JwtVerifier, http_jwks_loader
from microshop_chassis.db import Database

from . import __version__
from .api import router
from .expiry import ExpirySweeper
from .settings import InventorySettings


def create_app(settings: InventorySettings | None = None) -> FastAPI:
    settings = settings or InventorySettings()
    db = Database(settings.resolved_database_url())
    sweeper = ExpirySweeper(db, interval=settings.sweep_interval_seconds, batch_size=settings.sweep_batch_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await db.migrate("microshop_inventory:migrations")
        sweeper.start()
        yield
        await sweeper.stop()
        await db.dispose()

    app = create_service_app(
        settings=settings,
        version=__version__,
        description="The catalog, stock on hand and expiring stock reservations. Publishes and consumes no events.",
        routers=[router],
        lifespan=lifespan,
        readiness={"database": db.ping},
    )
    app.state.settings = settings
    app.state.db = db
    app.state.sweeper = sweeper
    # Tokens are verified against the public keys users publishes (fetched on first use).
    app.state.jwt_verifier = JwtVerifier(http_jwks_loader(settings.users_url, timeout=settings.http_timeout))
    return app
