"""The delivery worker: sends PENDING notifications, oldest first, and marks them SENT.

It runs beside the event consumer and never inside it, so a slow or absent mail server delays
mail but never event consumption. Each message carries a Message-ID derived from the
notification id; if we crash after the server accepted a message and before SENT is committed,
the one resend carries the same Message-ID and receivers drop it as a duplicate.
"""

from __future__ import annotations

import functools
import time
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime
from typing import Any

import structlog
from microshop_chassis.background import BackgroundWorker
from microshop_chassis.db import utcnow
from microshop_chassis.downstream import DownstreamError
from microshop_chassis.metrics import ServiceMetrics

from .domain import EVENT_FOR_TYPE, MessageRefused, NotificationType, one_line
from .mail import MailConnection, MailSender, describe
from .models import Notification
from .service import Notifications

log = structlog.get_logger("microshop.notifications.delivery")

MESSAGE_ID_DOMAIN = "microshop.local"


def message_id(notification_id: str) -> str:
    return f"<notification-{notification_id}@{MESSAGE_ID_DOMAIN}>"


class _CachedHeaderRegistry(HeaderRegistry):
    """The standard registry builds a new header class on every lookup (a third of the cost of
    building a message); one per header name is enough."""

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one registry for the process: nothing leaks
    def __getitem__(self, name: str) -> type:
        return super().__getitem__(name)


# email.policy.default, the same headers and bytes on the wire, built for two thirds of the CPU.
MAIL_POLICY = default_policy.clone(header_factory=_CachedHeaderRegistry())


def build_message(notification: Notification, mail_from: str) -> EmailMessage:
    message = EmailMessage(policy=MAIL_POLICY)
    message["From"] = mail_from
    message["To"] = notification.recipient
    message["Subject"] = one_line(notification.subject)  # rows stored before drafts were cleaned
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = message_id(notification.id)
    message["X-Microshop-Notification-Id"] = notification.id
    message["X-Microshop-Event-Type"] = EVENT_FOR_TYPE[NotificationType(notification.type)].value
    if notification.order_id:  # from an event: made header-safe like the subject
        message["X-Order-Id"] = one_line(notification.order_id)
    message.set_content(notification.body)
    return message


class DeliveryWorker(BackgroundWorker):
    name = "notification-delivery"
    failure_event = "delivery_round_failed"  # the database away: the rows wait for the next round

    def __init__(
        self,
        notifications: Notifications,
        mail: MailSender,
        *,
        mail_from: str,
        batch_size: int,
        interval: float,
        lease_seconds: float,
        take_over_at_start: bool = False,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        """``lease_seconds`` must outlast connecting plus one send: the lease on the rest of the
        batch is renewed before each send. ``take_over_at_start``: the first round also takes the
        rows a killed predecessor had leased (they would wait out its lease) - right only when no
        other process shares the database (SQLite)."""
        self.notifications = notifications
        self.mail = mail
        self.mail_from = mail_from
        self.batch_size = batch_size
        self.interval = interval
        # Retried soon after a failed round, and never less often than a quiet one.
        self.backoff_initial = min(self.backoff_initial, interval)
        self.backoff_max = interval
        self.lease_seconds = lease_seconds
        self._ignore_leases = take_over_at_start
        self.deliveries = (metrics or ServiceMetrics()).counter(
            "notifications_delivery_attempts_total", "Attempts to hand a notification to SMTP.", ["type", "outcome"])

    async def round(self) -> bool:
        return await self.deliver_due() == self.batch_size  # a full batch: more may be due

    async def deliver_due(self) -> int:
        """Send one batch of due notifications over one connection; return the batch size."""
        batch = await self.notifications.claim_due(limit=self.batch_size, lease_seconds=self.lease_seconds,
                                                   ignore_leases=self._ignore_leases)
        self._ignore_leases = False
        if not batch:
            return 0
        handled = 0
        leased_until = time.monotonic() + self.lease_seconds
        try:
            async with self.mail.connect() as connection:
                for notification in batch:
                    if leased_until - time.monotonic() < self.lease_seconds / 2:  # renewed before it could run out
                        await self.notifications.renew_lease([n.id for n in batch[handled:]], self.lease_seconds)
                        leased_until = time.monotonic() + self.lease_seconds
                    await self._deliver(connection, notification)
                    handled += 1
        except DownstreamError as exc:  # unreachable, or the connection was lost: the rest waits
            await self._failed(batch[handled:], exc)
        return len(batch)

    async def _deliver(self, connection: MailConnection, notification: Notification) -> None:
        try:
            await connection.send(self._message(notification))
        except MessageRefused as exc:
            await self._failed([notification], exc)
            return
        await self.notifications.mark_sent(notification.id)
        self.deliveries.labels(notification.type, "sent").inc()
        log.info("notification_sent", notification_id=notification.id, type=notification.type)

    def _message(self, notification: Notification) -> EmailMessage:
        try:
            return build_message(notification, self.mail_from)
        except (ValueError, TypeError) as exc:  # a header the email package refuses to encode
            raise MessageRefused(describe(exc)) from exc

    async def _failed(self, notifications: list[Notification], exc: Exception) -> None:
        error = str(exc)
        await self.notifications.mark_failed(notifications, error)
        for notification in notifications:
            self.deliveries.labels(notification.type, "failed").inc()
        log.warning("notification_delivery_failed", count=len(notifications), error=error)

    async def backlog(self) -> dict[str, Any]:
        """``/health``'s view of the backlog. Liveness must not fail because the database is away
        (readiness reports that), so then it says nothing."""
        try:
            return {"pending_deliveries": await self.notifications.pending_count()}
        except Exception as exc:
            log.warning("pending_count_failed", error=str(exc))
            return {}
