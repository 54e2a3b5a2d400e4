"""The composition root: builds notifications' app and wires database, broker, consumer and the
delivery worker."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from microshop_chassis.app import create_app as create_service_app
from microshop_chassis.auth import JwtVerifier, http_jwks_loader
from microshop_chassis.broker import Broker
from microshop_chassis.db import Database

from . import __version__, service
from .api import router
from .consumer import build_consumer
from .delivery import DeliveryWorker
from .settings import NotificationsSettings

log = structlog.get_logger("microshop.notifications")


def create_app(settings: NotificationsSettings | None = None) -> FastAPI:
    settings = settings or NotificationsSettings()
    db = Database(settings.resolved_database_url())
    broker = Broker(settings.nats_url, client_name="notifications")
    worker = DeliveryWorker(
        db,
        smtp_host=settings.smtp_host,
        smtp_port=settings.smtp_port,
        smtp_timeout=settings.smtp_timeout_seconds,
        mail_from=settings.mail_from,
        batch_size=settings.delivery_batch_size,
        interval=settings.delivery_interval_seconds,
        backoff=settings.retry_backoff_seconds,
        backoff_max=settings.retry_backoff_max_seconds,
    )
    consumer = build_consumer(db, broker, on_recorded=worker.wake)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await db.migrate("microshop_notifications:migrations")
        broker.start()
        consumer.start()
        worker.start()  # first round at once: sends what an earlier run left PENDING
        yield
        await consumer.stop()
        await worker.stop()
        await broker.close()
        await db.dispose()

    async def health_extra() -> dict[str, Any]:
        # Liveness must not fail because the database is away; readiness reports that.
        try:
            return {"pending_deliveries": await service.pending_count(db)}
        except Exception as exc:
            log.warning("pending_count_failed", error=str(exc))
            return {}

    app = create_service_app(
        settings=settings,
        version=__version__,
        description="E-mails for account and order events, each sent once. Consumes UserRegistered, "
        "OrderConfirmed, OrderRejected and OrderCancelled; publishes nothing.",
        routers=[router],
        lifespan=lifespan,
        readiness={"database": db.ping, "broker": broker.ping},
        health_extra=health_extra,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.broker = broker
    app.state.consumer = consumer
    app.state.delivery = worker
    app.state.jwt_verifier = JwtVerifier(http_jwks_loader(settings.users_url, settings.http_timeout))
    return app
