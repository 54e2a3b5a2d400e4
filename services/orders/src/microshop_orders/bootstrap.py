"""orders' composition root: its parts, declared in start order and handed to the chassis host."""

from __future__ import annotations

from microshop_chassis.auth import JwtVerifier
from microshop_chassis.host import ServiceHost

from . import __version__
from .api import ERRORS, router
from .clients import InventoryClient, PaymentsClient
from .saga import SagaRecovery, SagaRunner
from .service import Orders
from .settings import OrdersSettings
from .store import OrderStore

DESCRIPTION = ("Orders and the checkout saga (reserve stock, charge, commit stock, confirm). "
               "Publishes OrderPlaced, OrderConfirmed, OrderRejected, OrderCancelled.")


def build(settings: OrdersSettings | None = None, *, verifier: JwtVerifier | None = None) -> ServiceHost:
    settings = settings or OrdersSettings()
    host = ServiceHost(settings, version=__version__, description=DESCRIPTION, verifier=verifier)
    db = host.database("microshop_orders:migrations")
    host.outbox_relay(db, host.broker())
    inventory = InventoryClient(host.client("inventory", settings.inventory_url),
                                price_quote_seconds=settings.price_quote_seconds)
    payments = PaymentsClient(host.client("payments", settings.payments_url), timeout=settings.payments_timeout)
    store = OrderStore(db)
    saga = SagaRunner(store, inventory, payments, lease_seconds=settings.saga_lease_seconds,
                      deadline_seconds=settings.saga_deadline_seconds, metrics=host.metrics,
                      tracer_provider=host.tracer_provider)
    host.worker(SagaRecovery(saga, interval=settings.recovery_interval_seconds, take_over_at_start=db.is_sqlite))
    host.provide(Orders, Orders(store, inventory, payments, saga, fingerprint_key=settings.service_secret,
                                checkout_wait=settings.checkout_wait_seconds))
    host.routes(router, errors=ERRORS)
    return host
