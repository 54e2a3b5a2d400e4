"""The delivery worker against a real SMTP server that refuses one mailbox, on both databases."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from aiosmtpd.smtp import SMTP
from microshop_chassis.auth import Principal
from microshop_chassis.db import Database
from microshop_chassis.events import Event
from microshop_chassis.testing import wait_until
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


async def test_a_connection_serves_the_next_batch_until_idle_or_closed_by_the_server(database_url):
    handler = RefusingSmtpHandler(refused="nobody@example.com")
    sessions: list[SMTP] = []

    def new_session() -> SMTP:
        sessions.append(SMTP(handler, hostname="counting-smtp"))
        return sessions[-1]

    server = await asyncio.get_running_loop().create_server(new_session, "127.0.0.1", 0)
    db = Database(database_url)
    sender = SmtpSender("127.0.0.1", server.sockets[0].getsockname()[1], timeout=5, keep_alive=30)
    try:
        await db.migrate("microshop_notifications:migrations")
        notifications = Notifications(db, consumer="notifications", retry_backoff=60, retry_backoff_max=60)
        worker = DeliveryWorker(notifications, sender, mail_from="microshop <shop@microshop.local>",
                                batch_size=10, interval=1, lease_seconds=60)
        for address in ("a@example.com", "b@example.com"):
            await record_welcome(notifications, address)
            assert await worker.deliver_due() == 1
        assert handler.delivered == [["a@example.com"], ["b@example.com"]]
        assert len(sessions) == 1 and sender.holds_connection

        # The server ends the session while it idles: the next batch opens another, sends, loses nothing.
        sessions[0].transport.close()
        await wait_until(lambda: asyncio.sleep(0, not sender.holds_connection), what="the close seen")
        await record_welcome(notifications, "c@example.com")
        assert await worker.deliver_due() == 1
        assert handler.delivered[-1] == ["c@example.com"] and len(sessions) == 2

        await sender.close()  # at stop: QUIT, nothing kept
        assert not sender.holds_connection
        await record_welcome(notifications, "d@example.com")
        assert await worker.deliver_due() == 1 and len(sessions) == 3
        rows, _ = await notifications.list(ADMIN, type=None, order_id=None, limit=10, offset=0)
        assert {row.status for row in rows} == {"SENT"}
    finally:
        await sender.close()
        await db.dispose()
        server.close()
        await server.wait_closed()
