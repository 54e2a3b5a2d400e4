"""The delivery worker: sends PENDING notifications over SMTP, oldest first, and marks them SENT.

It runs beside the event consumer and never inside it, so a slow or absent SMTP server delays
mail but never event consumption. Each message carries a Message-ID derived from the
notification id; if we crash after the server accepted a message and before SENT is committed,
the one resend carries the same Message-ID and receivers drop it as a duplicate.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib
import structlog
from microshop_chassis.background import BackgroundWorker
from microshop_chassis.db import Database
from prometheus_client import Counter

from . import service
from .domain import EVENT_FOR_TYPE, NotificationType
from .models import Notification

log = structlog.get_logger("microshop.notifications.delivery")

DELIVERIES = Counter(
    "notifications_delivery_attempts_total", "Attempts to hand a notification to SMTP.", ["type", "outcome"]
)

MESSAGE_ID_DOMAIN = "microshop.local"

# Failures that concern one message, not the connection. ValueError/TypeError come from building
# the message (a header the email package refuses to encode).
_THIS_MESSAGE_ONLY = (
    aiosmtplib.SMTPResponseException,
    aiosmtplib.SMTPRecipientsRefused,
    aiosmtplib.SMTPNotSupported,
    ValueError,
    TypeError,
)


def message_id(notification_id: str) -> str:
    return f"<notification-{notification_id}@{MESSAGE_ID_DOMAIN}>"


def build_message(notification: Notification, mail_from: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = notification.recipient
    message["Subject"] = notification.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id(notification.id)
    message["X-Microshop-Notification-Id"] = notification.id
    message["X-Microshop-Event-Type"] = EVENT_FOR_TYPE[NotificationType(notification.type)]
    if notification.order_id:
        message["X-Order-Id"] = notification.order_id
    message.set_content(notification.body)
    return message


class DeliveryWorker(BackgroundWorker):
    task_name = "notification-delivery"

    def __init__(
        self,
        db: Database,
        *,
        smtp_host: str,
        smtp_port: int,
        smtp_timeout: float,
        mail_from: str,
        batch_size: int,
        interval: float,
        backoff: float,
        backoff_max: float,
    ) -> None:
        self.db = db
        self.smtp_host = smtp_host
        self.smtp_port = smtp_port
        self.smtp_timeout = smtp_timeout
        self.mail_from = mail_from
        self.batch_size = batch_size
        self.interval = interval
        self.backoff = backoff
        self.backoff_max = backoff_max
        # Longer than the worst case for one batch (connect plus every send timing out), so a
        # live worker never loses its lease mid-batch.
        self.lease_seconds = smtp_timeout * (batch_size + 2)
        self._local_hostname: str | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Deliver now rather than at the next interval (called after an event is recorded)."""
        self._wake.set()



    async def run(self) -> None:
        # getfqdn() may do a DNS lookup: once, off the event loop, not per SMTP connection.
        self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        while True:
            try:
                while await self.deliver_due() == self.batch_size:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database away: the rows wait for the next round
                log.warning("delivery_round_failed", error=f"{type(exc).__name__}: {exc}")
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()

    async def deliver_due(self) -> int:
        """Send one batch of due notifications over one SMTP connection; return the batch size."""
        batch = await service.claim_due(self.db, limit=self.batch_size, lease_seconds=self.lease_seconds)
        if not batch:
            return 0
        smtp = aiosmtplib.SMTP(
            hostname=self.smtp_host, port=self.smtp_port, timeout=self.smtp_timeout,
            local_hostname=self._local_hostname,
        )
        try:
            await smtp.connect()
        except Exception as exc:  # refused, unreachable, timed out, bad greeting: all wait and retry
            await self._failed(batch, exc)
            return len(batch)
        try:
            for index, notification in enumerate(batch):
                try:
                    message = build_message(notification, self.mail_from)
                    async with asyncio.timeout(self.smtp_timeout):
                        await smtp.send_message(message)
                except _THIS_MESSAGE_ONLY as exc:
                    # This message cannot be built or was refused; the connection is still good
                    # for the next one (aiosmtplib resets the envelope after a refusal).
                    await self._failed([notification], exc)
                    continue
                except Exception as exc:  # connection lost or timed out: the rest wait too
                    await self._failed(batch[index:], exc)
                    break
                await service.mark_sent(self.db, notification.id)
                DELIVERIES.labels(notification.type, "sent").inc()
                log.info("notification_sent", notification_id=notification.id, type=notification.type)
        finally:
            try:
                await smtp.quit()
            except Exception:  # already disconnected: just drop the socket
                smtp.close()
        return len(batch)

    async def _failed(self, notifications: list[Notification], exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        await service.mark_failed(
            self.db, notifications, error, backoff=self.backoff, backoff_max=self.backoff_max
        )
        for notification in notifications:
            DELIVERIES.labels(notification.type, "failed").inc()
        log.warning("notification_delivery_failed", count=len(notifications), smtp_port=self.smtp_port,
                    error=error)
