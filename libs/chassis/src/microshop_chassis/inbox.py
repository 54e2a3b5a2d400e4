"""The idempotent consumer's inbox: an event's effect happens once, whatever the redeliveries.

JetStream delivers at least once (a crash between handling and ack redelivers). The inbox makes
the effect happen once: the event id is recorded in the same transaction as the handler's
changes, so a redelivered event finds its id and is acked without being applied again.
Pair it with consumer.EventConsumer: ``EventConsumer(handler=with_inbox(db, name, apply))``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from .consumer import EventHandler
from .db import Database
from .events import Event
from .tables import inbox, insert_or_ignore

log = structlog.get_logger("microshop.inbox")

SessionHandler = Callable[[AsyncSession, Event], Awaitable[None]]


def with_inbox(db: Database, consumer: str, apply: SessionHandler) -> EventHandler:
    """Wrap ``apply(session, event)`` so it runs once per event id, in one transaction with the
    inbox record."""

    async def handle(event: Event) -> None:
        async with db.transaction() as session:
            result = await session.execute(
                insert_or_ignore(session.bind.dialect.name, inbox),
                {"consumer": consumer, "event_id": event.id, "event_type": event.type,
                 "handled_at": datetime.now(UTC)},
            )
            if result.rowcount == 0:
                log.info("event_duplicate_skipped", consumer=consumer, event_id=event.id, type=event.type)
                return
            await apply(session, event)

    return handle
