"""The composition root: builds payments' app and wires database, broker, relay and card processor."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from microshop_chassis.app import create_app as create_service_app
from microshop_chassis.auth import JwtVerifier, http_jwks_loader
from microshop_chassis.broker import Broker
from microshop_chassis.db import Database
from microshop_chassis.http_client import ServiceClient
from microshop_chassis.outbox import OutboxRelay

from . import __version__
from .api import router
from .processor import CardProcessor
from .settings import PaymentsSettings


def create_app(settings: PaymentsSettings | None = None) -> FastAPI:
    settings = settings or PaymentsSettings()
    db = Database(settings.resolved_database_url())
    broker = Broker(settings.nats_url, client_name="payments")
    relay = OutboxRelay(db, broker)
    processor = CardProcessor(
        # An outside system: no microshop token is sent to it.
        ServiceClient("card-processor", settings.card_processor_url,
                      timeout=settings.card_processor_timeout, retries=settings.card_processor_retries)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await db.migrate("microshop_payments:migrations")
        broker.start()
        relay.start()
        yield
        await relay.stop()
        await broker.close()
        await db.dispose()

    app = create_service_app(
        settings=settings,
        version=__version__,
        description="Payments and their ledger; the only service that talks to the card processor. "
                    "Publishes PaymentCaptured, PaymentDeclined, PaymentRefunded.",
        routers=[router],
        lifespan=lifespan,
        # The card processor is an outside system: its outages answer 503 per request instead of
        # taking this service (and its reads) out of rotation.
        readiness={"database": db.ping, "broker": broker.ping},
    )
    app.state.settings = settings
    app.state.db = db
    app.state.broker = broker
    app.state.relay = relay
    app.state.processor = processor
    app.state.jwt_verifier = JwtVerifier(http_jwks_loader(settings.users_url))
    return app
