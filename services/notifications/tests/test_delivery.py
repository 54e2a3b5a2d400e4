"""The delivery worker against a real SMTP server that refuses one mailbox, on both databases."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from aiosmtpd.smtp import SMTP
from microshop_chassis.db import Database
from microshop_chassis.events import Event
from microshop_notifications import service
from microshop_notifications.delivery import DeliveryWorker
from microshop_notifications.schemas import as_utc


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


async def record_welcome(db: Database, email: str) -> None:
    event = Event(type="UserRegistered", source="users",
                  data={"user_id": str(uuid.uuid4()), "email": email, "name": "Ada", "role": "customer"})
    async with db.transaction() as session:
        await service.record(session, event, draft=service.draft_for(event))


async def test_a_refused_message_waits_while_the_rest_of_the_batch_is_sent(database_url):
    handler = RefusingSmtpHandler(refused="gone@example.com")
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, hostname="refusing-smtp"), "127.0.0.1", 0
    )
    db = Database(database_url)
    try:
        await db.migrate("microshop_notifications:migrations")
        await record_welcome(db, "gone@example.com")  # oldest: sent first, refused
        await record_welcome(db, "ada@example.com")
        worker = DeliveryWorker(
            db, smtp_host="127.0.0.1", smtp_port=server.sockets[0].getsockname()[1], smtp_timeout=5,
            mail_from="microshop <shop@microshop.local>", batch_size=10, interval=1, backoff=60, backoff_max=60,
        )

        before = datetime.now(UTC)
        assert await worker.deliver_due() == 2
        assert handler.delivered == [["ada@example.com"]]
        rows, _ = await service.list_notifications(db, user_id=None, type=None, order_id=None, limit=10, offset=0)
        by_recipient = {row.recipient: row for row in rows}
        refused, sent = by_recipient["gone@example.com"], by_recipient["ada@example.com"]
        assert (sent.status, sent.attempts) == ("SENT", 0)
        assert (refused.status, refused.attempts) == ("PENDING", 1)
        assert "550" in refused.last_error
        assert as_utc(refused.next_attempt_at) >= before + timedelta(seconds=60)
        # Nothing is due now: the refused one waits out its backoff, the sent one is done.
        assert await worker.deliver_due() == 0
    finally:
        await db.dispose()
        server.close()
        await server.wait_closed()
