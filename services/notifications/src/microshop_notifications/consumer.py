"""Consuming events: each one the notifications service cares about becomes one PENDING row.

The handler only writes to the database (inbox row and notification in one transaction) and wakes
the delivery worker; it never talks to the mail server, so mail trouble cannot stall or fail
consumption. An event whose data breaks its contract is dead-lettered at once by the chassis: no
retry can fix it.
"""

from __future__ import annotations

from collections.abc import Callable

from microshop_chassis.consumer import EventHandler, PoisonEvent
from microshop_chassis.events import Event

from .domain import InvalidEvent
from .service import Notifications

# The durable consumer's name, which also keys its inbox.
CONSUMER = "notifications"


def event_handler(notifications: Notifications, *, on_recorded: Callable[[], None]) -> EventHandler:
    async def handle(event: Event) -> None:
        try:
            await notifications.record(event)
        except InvalidEvent as exc:
            raise PoisonEvent(str(exc)) from exc
        on_recorded()  # the transaction has committed: the worker can send right away

    return handle
