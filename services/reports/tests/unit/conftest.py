"""In-memory stand-ins for what reports reaches over the network (the broker: the stream's history
and the durable consumer), and its own model on DuckDB in memory through the real store: the
projection and the use cases run in milliseconds, with no server, broker or file."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from microshop_chassis.contracts import EventType
from microshop_chassis.downstream import ServiceUnavailable
from microshop_chassis.events import Event
from microshop_reports.service import Projection, Reports
from microshop_reports.store import ReportStore


class Shop:
    """Events as the orders and payments services publish them, each a second after the last."""

    def __init__(self) -> None:
        self._clock = datetime(2025, 1, 1, tzinfo=UTC)

    def order(self, *lines: tuple[str, int, int], customer_id: str = "customer-1") -> dict:
        """Order data for lines of (sku, quantity, unit_price_cents)."""
        return {
            "order_id": str(uuid.uuid4()), "customer_id": customer_id,
            "customer_email": f"{customer_id}@example.com",
            "items": [{"sku": sku, "quantity": qty, "unit_price_cents": price} for sku, qty, price in lines],
            "total_cents": sum(qty * price for _, qty, price in lines), "currency": "USD",
        }

    def event(self, event_type: EventType, data: dict) -> Event:
        self._clock += timedelta(seconds=1)
        return Event(type=event_type.value, source=event_type.source, data=data, occurred_at=self._clock)

    def placed(self, order: dict) -> Event:
        return self.event(EventType.ORDER_PLACED, order)

    def confirmed(self, order: dict) -> Event:
        return self.event(EventType.ORDER_CONFIRMED, {**order, "payment_id": f"pay-{order['order_id']}"})

    def rejected(self, order: dict) -> Event:
        return self.event(EventType.ORDER_REJECTED, {**order, "reason": "out_of_stock"})

    def cancelled(self, order: dict) -> Event:
        return self.event(EventType.ORDER_CANCELLED, order)

    def captured(self, order: dict) -> Event:
        return self.event(EventType.PAYMENT_CAPTURED, self._payment(order))

    def refunded(self, order: dict) -> Event:
        return self.event(EventType.PAYMENT_REFUNDED, self._payment(order))

    def checkout(self, order: dict) -> list[Event]:
        """A successful checkout's events, in the order the saga emits them."""
        return [self.placed(order), self.captured(order), self.confirmed(order)]

    @staticmethod
    def _payment(order: dict) -> dict:
        return {"payment_id": f"pay-{order['order_id']}", "order_id": order["order_id"],
                "customer_id": order["customer_id"], "amount_cents": order["total_cents"], "currency": "USD"}


@dataclass
class FakeConsumer:
    """The durable consumer as Reports sees it: paused and resumed, and its lag."""

    calls: list[str]
    paused: bool = False
    lag: int = 0

    async def pause(self) -> None:
        self.calls.append("pause")
        self.paused = True

    def resume(self) -> None:
        self.calls.append("resume")
        self.paused = False

    async def pending(self) -> int:
        return self.lag


@dataclass
class FakeStream:
    """The stream's history as a list: what a replay reads, in order, in batches."""

    calls: list[str]
    events: list[Event] = field(default_factory=list)
    failures: int = 0  # the next reads to fail midway, after their first batch
    reading: asyncio.Event = field(default_factory=asyncio.Event, init=False)  # set once a read began
    gate: asyncio.Event = field(default_factory=asyncio.Event, init=False)  # which then waits here
    _connected: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def __post_init__(self) -> None:
        self.gate.set()
        self._connected.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def disconnect(self) -> None:
        self._connected.clear()

    def connect(self) -> None:
        self._connected.set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def read(self, subjects: list[str], *, batch_size: int = 256):
        self.calls.append("read")
        self.reading.set()
        await self.gate.wait()
        matching = [event for event in self.events if event.subject in subjects]
        for start in range(0, len(matching), batch_size):
            if start and self.failures:
                self.failures -= 1
                raise ServiceUnavailable("broker", "connection lost")
            yield matching[start:start + batch_size]


@dataclass
class World:
    store: ReportStore
    projection: Projection
    stream: FakeStream
    consumer: FakeConsumer
    reports: Reports
    calls: list[str]  # pause, read and resume, in the order they happened


@pytest.fixture
def shop() -> Shop:
    return Shop()


@pytest.fixture
async def store():
    """A new model, open and empty."""
    store = ReportStore(":memory:")
    assert await store.open()  # nothing there yet: a replay is due
    yield store
    await store.close()


@pytest.fixture
async def make_world():
    """Reports on a model of its own (DuckDB in memory, or the file at ``path``), opened as at
    start. Closed after the test."""
    worlds: list[World] = []

    async def make(path: str = ":memory:") -> World:
        calls: list[str] = []
        store = ReportStore(path)
        stream, consumer = FakeStream(calls), FakeConsumer(calls)
        reports = Reports(store, stream, consumer, replay_batch_size=2)
        world = World(store, Projection(store), stream, consumer, reports, calls)
        worlds.append(world)
        await reports.open()
        return world

    yield make
    for world in worlds:
        await world.store.close()


@pytest.fixture
async def world(make_world) -> World:
    """A new model, opened at start: a replay is due, and the consumer is held until it is done."""
    return await make_world()
