"""An in-memory mail server in place of SMTP, and notifications' own database in SQLite memory
through the real use cases: recording, reading and delivery run in milliseconds, with no server,
broker or process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage

import pytest
from microshop_chassis.auth import Principal
from microshop_chassis.downstream import ServiceUnavailable
from microshop_chassis.events import Event
from microshop_chassis.metrics import ServiceMetrics
from microshop_chassis.testing import memory_database
from microshop_notifications.consumer import CONSUMER
from microshop_notifications.delivery import DeliveryWorker
from microshop_notifications.domain import MessageRefused
from microshop_notifications.models import Base
from microshop_notifications.service import Notifications

BATCH_SIZE = 3


@dataclass
class FakeMail:
    """A mail server as the delivery worker's MailSender sees it."""

    refused: set[str] = field(default_factory=set)  # recipients answered 550
    down: bool = False  # nothing listens
    hang_up_after: int | None = None  # the connection drops once this many messages were taken
    sent: list[EmailMessage] = field(default_factory=list)
    connections: int = 0

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[FakeMail]:
        if self.down:
            raise ServiceUnavailable("smtp", "ConnectionRefusedError: nothing listens")
        self.connections += 1
        yield self

    async def send(self, message: EmailMessage) -> None:
        if self.hang_up_after is not None and len(self.sent) >= self.hang_up_after:
            raise ServiceUnavailable("smtp", "SMTPServerDisconnected: connection lost")
        if message["To"] in self.refused:
            raise MessageRefused(f"SMTPRecipientsRefused: 550 5.1.1 {message['To']}: no such mailbox")
        self.sent.append(message)

    def recipients(self) -> list[str]:
        return [message["To"] for message in self.sent]


ITEMS = [{"sku": "BOOK-1", "quantity": 2, "unit_price_cents": 1250},
         {"sku": "MUG-1", "quantity": 1, "unit_price_cents": 300}]


class EventFactory:
    """Events as their producers publish them (contracts/events)."""

    def user_registered(self, name: str = "Ada", *, user_id: str | None = None, **data) -> Event:
        user_id = user_id or str(uuid.uuid4())
        return Event(type="UserRegistered", source="users",
                     data={"user_id": user_id, "email": f"{user_id[:8]}@example.com", "name": name,
                           "role": "customer", **data})

    def order(self, event_type: str = "OrderConfirmed", *, customer_id: str | None = None,
              order_id: str | None = None, **data) -> Event:
        customer_id = customer_id or str(uuid.uuid4())
        payload = {"order_id": order_id or str(uuid.uuid4()), "customer_id": customer_id,
                   "customer_email": f"{customer_id[:8]}@example.com", "items": ITEMS, "total_cents": 2800,
                   "currency": "USD"}
        if event_type == "OrderConfirmed":
            payload["payment_id"] = "pay-1"
        if event_type == "OrderRejected":
            payload["reason"] = "Out of stock: BOOK-1"
        return Event(type=event_type, source="orders", data={**payload, **data})


@dataclass
class World:
    notifications: Notifications
    mail: FakeMail
    metrics: ServiceMetrics
    delivery: DeliveryWorker
    events: EventFactory

    @staticmethod
    def admin() -> Principal:
        return Principal(id="admin-1", role="admin")

    @staticmethod
    def customer(customer_id: str) -> Principal:
        return Principal(id=customer_id, role="customer")

    async def all(self) -> list:
        found, _ = await self.notifications.list(self.admin(), type=None, order_id=None, limit=1000, offset=0)
        return found

    def attempts(self, outcome: str, kind: str = "order_confirmed") -> float:
        return self.metrics.value("notifications_delivery_attempts_total", {"type": kind, "outcome": outcome}) or 0


@pytest.fixture
def fake_mail() -> type[FakeMail]:
    return FakeMail


@pytest.fixture
def events() -> EventFactory:
    return EventFactory()


@pytest.fixture
async def world(events) -> AsyncIterator[World]:
    db = await memory_database(Base.metadata)
    notifications = Notifications(db, consumer=CONSUMER, retry_backoff=1.0, retry_backoff_max=300.0)
    mail, metrics = FakeMail(), ServiceMetrics()
    delivery = DeliveryWorker(notifications, mail, mail_from="microshop <shop@microshop.local>",
                              batch_size=BATCH_SIZE, interval=1.0, lease_seconds=60, metrics=metrics)
    yield World(notifications, mail, metrics, delivery, events)
    await db.dispose()
