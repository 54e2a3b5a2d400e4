"""The composition root: builds users' app and wires database, broker, relay and token keys."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from microshop_chassis.app import create_app as create_service_app
from microshop_chassis.auth import JwtVerifier
from microshop_chassis.broker import Broker
from microshop_chassis.db import Database
from microshop_chassis.outbox import OutboxRelay

from . import __version__, service
from .api import router
from .security import TokenIssuer, jwks
from .settings import UsersSettings


def create_app(settings: UsersSettings | None = None) -> FastAPI:
    settings = settings or UsersSettings()
    db = Database(settings.resolved_database_url())
    broker = Broker(settings.nats_url, client_name="users")
    relay = OutboxRelay(db, broker)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await db.migrate("microshop_users:migrations")
        app.state.issuer = await TokenIssuer.load_or_create(db)
        await service.ensure_admin(db, email=settings.admin_email, password=settings.admin_password)
        broker.start()
        relay.start()
        yield
        await relay.stop()
        await broker.close()
        await db.dispose()

    app = create_service_app(
        settings=settings,
        version=__version__,
        description="Accounts, roles and tokens. Publishes UserRegistered.",
        routers=[router],
        lifespan=lifespan,
        readiness={"database": db.ping, "broker": broker.ping},
    )
    app.state.settings = settings
    app.state.db = db
    app.state.broker = broker
    app.state.relay = relay
    # users verifies its own tokens from its own table, not over HTTP to itself.
    app.state.jwt_verifier = JwtVerifier(lambda: jwks(db))
    return app
