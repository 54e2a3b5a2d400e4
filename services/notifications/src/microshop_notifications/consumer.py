"""Consuming events: each one the notifications service cares about becomes one PENDING row.

The handler only writes to the database (inbox row and notification in one transaction) and wakes
the delivery worker; it never talks to SMTP, so mail trouble cannot stall or fail consumption.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import structlog
from microshop_chassis.broker import Broker
from microshop_chassis.consumer import EventConsumer
from microshop_chassis.db import Database
from microshop_chassis.events import DEAD_LETTER_PREFIX, Event, subject_for
from microshop_chassis.inbox import with_inbox

from . import service
from .domain import InvalidEvent

log = structlog.get_logger("microshop.notifications.consumer")

CONSUMER = "notifications"
SUBJECTS = [
    subject_for("users", "UserRegistered"),
    subject_for("orders", "OrderConfirmed"),
    subject_for("orders", "OrderRejected"),
    subject_for("orders", "OrderCancelled"),
]


def build_consumer(db: Database, broker: Broker, *, on_recorded: Callable[[], None]) -> EventConsumer:
    async def handle(event: Event) -> None:
        try:
            draft = service.draft_for(event)
        except InvalidEvent as exc:
            await dead_letter(broker, event, str(exc))
            return
        await with_inbox(db, CONSUMER, partial(service.record, draft=draft))(event)
        on_recorded()  # the transaction has committed: the worker can send right away

    return EventConsumer(broker, durable=CONSUMER, subjects=SUBJECTS, handler=handle)


async def dead_letter(broker: Broker, event: Event, reason: str) -> None:
    """Park an event whose data breaks its contract at once, rather than retrying it max_deliver
    times first: no retry can fix it. (The chassis does this itself only for unparseable
    envelopes.)"""
    js = await broker.wait_connected()
    await js.publish(
        f"{DEAD_LETTER_PREFIX}.{CONSUMER}",
        event.model_dump_json().encode(),
        headers={
            # A redelivery of the same event (crash before the ack) is dropped by JetStream.
            "Nats-Msg-Id": f"{CONSUMER}:{event.id}",
            "Microshop-Dead-Letter-Reason": reason[:500],
            "Microshop-Original-Subject": event.subject,
        },
    )
    log.error("event_dead_lettered", consumer=CONSUMER, event_id=event.id, type=event.type, reason=reason)
