"""inventory's composition root: its parts, declared in start order and handed to the chassis host.

inventory publishes and consumes no events, so it has no broker, relay or consumers, and its
readiness is its database alone.
"""

from __future__ import annotations

from microshop_chassis.auth import JwtVerifier
from microshop_chassis.host import ServiceHost

from . import __version__
from .api import ERRORS, router
from .expiry import ExpirySweeper
from .service import Catalog, Reservations
from .settings import InventorySettings

DESCRIPTION = "The catalog, stock on hand and expiring stock reservations. Publishes and consumes no events."


def build(settings: InventorySettings | None = None, *, verifier: JwtVerifier | None = None) -> ServiceHost:
    settings = settings or InventorySettings()
    host = ServiceHost(settings, version=__version__, description=DESCRIPTION, verifier=verifier)
    db = host.database("microshop_inventory:migrations")
    reservations = Reservations(db, ttl_seconds=settings.reservation_ttl_seconds)
    host.worker(ExpirySweeper(reservations, interval=settings.sweep_interval_seconds,
                              batch_size=settings.sweep_batch_size))
    host.provide(Catalog, Catalog(db))
    host.provide(Reservations, reservations)
    host.routes(router, errors=ERRORS)
    return host
