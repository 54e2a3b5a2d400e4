"""The composition root: builds reports' app and wires the DuckDB store, broker and consumer."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from microshop_chassis.app import create_app as create_service_app
from microshop_chassis.auth import JwtVerifier, http_jwks_loader
from microshop_chassis.broker import Broker

from . import __version__
from .api import router
from .service import Reports
from .settings import ReportsSettings
from .store import ReportStore


def create_app(settings: ReportsSettings | None = None) -> FastAPI:
    settings = settings or ReportsSettings()
    store = ReportStore(settings.resolved_duckdb_path(), memory_limit=settings.duckdb_memory_limit)
    broker = Broker(settings.nats_url, client_name="reports")
    reports = Reports(store, broker, replay_batch_size=settings.replay_batch_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        needs_replay = await store.open()
        broker.start()
        reports.start(replay_first=needs_replay)
        yield
        await reports.stop()
        await broker.close()
        await store.close()

    app = create_service_app(
        settings=settings,
        version=__version__,
        description="Sales figures from order and payment events, in DuckDB. Consumes Order* and "
        "Payment{Captured,Refunded}; publishes nothing.",
        routers=[router],
        lifespan=lifespan,
        readiness={"duckdb": store.ping, "broker": broker.ping},
    )
    app.state.settings = settings
    app.state.store = store
    app.state.broker = broker
    app.state.reports = reports
    app.state.jwt_verifier = JwtVerifier(http_jwks_loader(settings.users_url))
    return app
