"""The composition root: builds orders' app and wires database, broker, relay, clients and saga."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI
from microshop_chassis.app import create_app as create_service_app
from microshop_chassis.auth import JwtVerifier, ServiceTokenProvider, http_jwks_loader
from microshop_chassis.broker import Broker
from microshop_chassis.db import Database
from microshop_chassis.http_client import ServiceClient
from microshop_chassis.outbox import OutboxRelay

from . import __version__
from .api import router
from .clients import InventoryClient, PaymentsClient
from .saga import SagaRunner
from .service import Orders
from .settings import OrdersSettings


def create_app(settings: OrdersSettings | None = None) -> FastAPI:
    settings = settings or OrdersSettings()
    db = Database(settings.resolved_database_url())
    broker = Broker(settings.nats_url, client_name="orders")
    relay = OutboxRelay(db, broker)
    tokens = ServiceTokenProvider(settings.users_url, "orders", settings.service_secret)

    def client(target: str, url: str) -> ServiceClient:
        return ServiceClient(target, url, timeout=settings.http_timeout, token_provider=tokens,
                             token_refresh=tokens.invalidate)

    inventory = InventoryClient(client("inventory", settings.inventory_url))
    payments = PaymentsClient(client("payments", settings.payments_url), timeout=settings.payments_timeout)
    saga = SagaRunner(db, inventory, payments, lease_seconds=settings.saga_lease_seconds,
                      deadline_seconds=settings.saga_deadline_seconds)
    orders = Orders(db, inventory, payments, saga, fingerprint_key=settings.service_secret,
                    checkout_wait=settings.checkout_wait_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await db.migrate("microshop_orders:migrations")
        broker.start()
        relay.start()
        recovery = asyncio.create_task(
            saga.recover_forever(settings.recovery_interval_seconds, take_over_at_start=db.is_sqlite),
            name="saga-recovery",
        )
        yield
        recovery.cancel()
        await saga.stop()
        await relay.stop()
        await broker.close()
        await db.dispose()

    app = create_service_app(
        settings=settings,
        version=__version__,
        description="Orders and the checkout saga (reserve stock, charge, commit stock, confirm). "
        "Publishes OrderPlaced, OrderConfirmed, OrderRejected, OrderCancelled.",
        routers=[router],
        lifespan=lifespan,
        readiness={"database": db.ping, "broker": broker.ping},
    )
    app.state.settings = settings
    app.state.db = db
    app.state.orders = orders
    app.state.saga = saga
    app.state.relay = relay
    app.state.jwt_verifier = JwtVerifier(http_jwks_loader(settings.users_url))
    return app
