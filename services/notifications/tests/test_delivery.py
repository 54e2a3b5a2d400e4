"""The delivery worker against a real SMTP server that refuses one mailbox, on both databases."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from aiosmtpd.smtp import SMTP
from microshop_chassis.auth import Principal
from microshop_chassis.db import Database
from microshop_chassis.events import Event
from microshop_notifications.delivery import DeliveryWorker
from microshop_notifications.mail import SmtpSender
from microshop_notifications.service import Notifications

ADMIN = Principal(id="admin", role="admin")


class RefusingSmtpHandler:
    """Accepts every recipient except ``refused``, which gets a permanent 550."""

    def __init__(self, refused: str) -> None:
        self.refused = refused
        self.delivered: list[list[str]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == self.refused:
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.delivered.append(list(envelope.rcpt_tos))
        return "250 OK"


async def record_welcome(notifications: Notifications, email: str) -> None:
    event = Event(type="UserRegistered", source="users",
                  data={"user_id": str(uuid.uuid4()), "email": email, "name": "Ada", "role": "customer"})
    await notifications.record(event)


async def test_a_refused_message_waits_while_the_rest_of_the_batch_is_sent(database_url):
    handler = RefusingSmtpHandler(refused="gone@example.com")
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, hostname="refusing-smtp"), "127.0.0.1", 0
    )
    db = Database(database_url)
    try:
        await db.migrate("microshop_notifications:migrations")
        notifications = Notifications(db, consumer="notifications", retry_backoff=60, retry_backoff_max=60)
        await record_welcome(notifications, "gone@example.com")  # oldest: sent first, refused
        await record_welcome(notifications, "ada@example.com")
        worker = DeliveryWorker(
            notifications, SmtpSender("127.0.0.1", server.sockets[0].getsockname()[1], timeout=5),
            mail_from="microshop <shop@microshop.local>", batch_size=10, interval=1, lease_seconds=60,
        )

        before = datetime.now(UTC)
        assert await worker.deliver_due() == 2
        assert handler.delivered == [["ada@example.com"]]
        rows, _ = await notifications.list(ADMIN, type=None, order_id=None, limit=10, offset=0)
        by_recipient = {row.recipient: row for row in rows}
        refused, sent = by_recipient["gone@example.com"], by_recipient["ada@example.com"]
        assert (sent.status, sent.attempts) == ("SENT", 0)
        assert (refused.status, refused.attempts) == ("PENDING", 1)
        assert "550" in refused.last_error
        assert refused.next_attempt_at >= before + timedelta(seconds=60)
        # Nothing is due now: the refused one waits out its backoff, the sent one is done.
        assert await worker.deliver_due() == 0
    finally:
        await db.dispose()
        server.close()
        await server.wait_closed()
