"""payments' composition root: its parts, declared in start order and handed to the chassis host."""

from __future__ import annotations

from datetime import timedelta

from microshop_chassis.auth import JwtVerifier
from microshop_chassis.host import ServiceHost
from microshop_chassis.resilience import Bulkhead

from . import __version__
from .api import ERRORS, router
from .domain import VelocityLimit
from .processor import PROCESSOR, CardProcessor
from .service import Payments
from .settings import PaymentsSettings

DESCRIPTION = ("Payments and their ledger; the only service that talks to the card processor. "
               "Publishes PaymentCaptured, PaymentDeclined, PaymentRefunded.")


def build(settings: PaymentsSettings | None = None, *, verifier: JwtVerifier | None = None) -> ServiceHost:
    settings = settings or PaymentsSettings()
    host = ServiceHost(settings, version=__version__, description=DESCRIPTION, verifier=verifier)
    db = host.database("microshop_payments:migrations")
    host.outbox_relay(db, host.broker())
    # An outside system: no microshop token is sent to it, and it is no part of readiness (its
    # outages answer 503 per request instead of taking this service and its reads out of rotation).
    processor = CardProcessor(host.client(PROCESSOR, settings.card_processor_url, authenticated=False,
                                          timeout=settings.card_processor_timeout,
                                          retries=settings.card_processor_retries,
                                          bulkhead=Bulkhead(PROCESSOR, limit=settings.card_processor_connections,
                                                            max_wait=settings.card_processor_queue_seconds,
                                                            metrics=host.metrics)))
    host.provide(Payments, Payments(
        db, processor,
        cards_limit=VelocityLimit(settings.velocity_max_cards,
                                  timedelta(seconds=settings.velocity_cards_window_seconds)),
        declined_cards_limit=VelocityLimit(settings.velocity_max_declined_cards,
                                           timedelta(seconds=settings.velocity_declines_window_seconds)),
    ))
    host.routes(router, errors=ERRORS)
    return host
