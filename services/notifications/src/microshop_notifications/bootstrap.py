"""notifications' composition root: its parts, declared in start order and handed to the chassis host."""

from __future__ import annotations

from microshop_chassis.auth import JwtVerifier
from microshop_chassis.events import subjects_of
from microshop_chassis.host import ServiceHost

from . import __version__
from .api import ERRORS, router
from .consumer import CONSUMER, event_handler
from .delivery import DeliveryWorker
from .domain import TYPE_FOR_EVENT
from .mail import MailSender, SmtpSender
from .service import Notifications
from .settings import NotificationsSettings

DESCRIPTION = ("E-mails for account and order events, each sent once. Consumes UserRegistered, "
               "OrderConfirmed, OrderRejected and OrderCancelled; publishes nothing.")


def build(settings: NotificationsSettings | None = None, *, verifier: JwtVerifier | None = None,
          mail: MailSender | None = None) -> ServiceHost:
    """``mail``: where messages go (default: the SMTP server of the settings)."""
    settings = settings or NotificationsSettings()
    host = ServiceHost(settings, version=__version__, description=DESCRIPTION, verifier=verifier)
    db = host.database("microshop_notifications:migrations")
    broker = host.broker()
    notifications = host.provide(Notifications, Notifications(
        db, consumer=CONSUMER, retry_backoff=settings.retry_backoff_seconds,
        retry_backoff_max=settings.retry_backoff_max_seconds))
    if mail is None:
        mail = SmtpSender(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds,
                          keep_alive=settings.smtp_keep_alive_seconds,
                          tracer=host.tracer_provider.get_tracer("microshop.mail"))
        host.on_stop(mail.close, "smtp-close")
    # First round at once: sends what an earlier run left PENDING (on SQLite, leased rows too).
    delivery = host.worker(DeliveryWorker(
        notifications, mail, mail_from=settings.mail_from, batch_size=settings.delivery_batch_size,
        interval=settings.delivery_interval_seconds, lease_seconds=settings.delivery_lease_seconds,
        take_over_at_start=db.is_sqlite, metrics=host.metrics))
    host.consumer(broker, durable=CONSUMER, subjects=subjects_of(*TYPE_FOR_EVENT),
                  handler=event_handler(notifications, on_recorded=delivery.wake))
    host.health(delivery.backlog)
    host.routes(router, errors=ERRORS)
    return host
