"""In-memory stand-ins for what orders reaches over the network (inventory and payments), and
orders' own database in SQLite memory through its real store: the saga and the use cases run in
milliseconds, with no server, broker or process."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from microshop_chassis.auth import Principal
from microshop_chassis.downstream import ServiceUnavailable
from microshop_chassis.metrics import ServiceMetrics
from microshop_chassis.testing import memory_database
from microshop_orders.clients import CardToken, Price
from microshop_orders.domain import DECLINED_REASON, Card, Checkout, InvalidCard, StepResult, UnknownProducts
from microshop_orders.models import Base
from microshop_orders.saga import SagaRunner
from microshop_orders.service import Orders
from microshop_orders.store import OrderStore


class Switchable:
    """A fake callee with a ``down`` switch."""

    down: bool

    def up_for(self, method: str):
        """``method`` as a stand-in that answers even while the callee is down: a callee that is
        down for one kind of call only (payments tokenizes, but cannot charge)."""
        real = getattr(type(self), method)

        async def call(*args, **kwargs):
            down, self.down = self.down, False
            try:
                return await real(self, *args, **kwargs)
            finally:
                self.down = down

        return call


@dataclass
class FakeInventory(Switchable):
    """inventory as orders' InventoryClient sees it: prices, and reservations keyed by order."""

    stock: dict[str, int] = field(default_factory=lambda: {"mug": 10, "tee": 5})
    prices_cents: dict[str, int] = field(default_factory=lambda: {"mug": 1200, "tee": 2500})
    reservations: dict[str, dict] = field(default_factory=dict)
    down: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)

    def _call(self, action: str, order_id: str = "") -> None:
        self.calls.append((action, order_id))
        if self.down:
            raise ServiceUnavailable("inventory", "down")

    async def prices(self, skus: list[str]) -> dict[str, Price]:
        self._call("prices")
        missing = sorted(set(skus) - set(self.prices_cents))
        if missing:
            raise UnknownProducts(missing)
        return {sku: Price(self.prices_cents[sku], "USD") for sku in skus}

    async def reserve(self, order_id: str, lines: list[tuple[str, int]]) -> StepResult:
        self._call("reserve", order_id)
        if order_id in self.reservations:
            status = self.reservations[order_id]["status"]
            return StepResult(ok=status in ("HELD", "COMMITTED"), reason=None if status != "RELEASED" else "closed")
        short = sorted(sku for sku, quantity in lines if self.stock.get(sku, 0) < quantity)
        if short:
            return StepResult(ok=False, reason=f"out of stock: {', '.join(short)}")
        for sku, quantity in lines:
            self.stock[sku] -= quantity
        self.reservations[order_id] = {"status": "HELD", "lines": dict(lines)}
        return StepResult(ok=True)

    async def commit(self, order_id: str) -> StepResult:
        self._call("commit", order_id)
        reservation = self.reservations[order_id]
        if reservation["status"] == "EXPIRED":
            return StepResult(ok=False, reason="stock reservation expired before it was committed")
        reservation["status"] = "COMMITTED"
        return StepResult(ok=True)

    async def release(self, order_id: str) -> StepResult:
        self._call("release", order_id)
        reservation = self.reservations.setdefault(order_id, {"status": "RELEASED", "lines": {}})
        if reservation["status"] in ("HELD", "EXPIRED"):
            if reservation["status"] == "HELD":
                for sku, quantity in reservation["lines"].items():
                    self.stock[sku] += quantity
            reservation["status"] = "RELEASED"
        return StepResult(ok=True)

    async def restock(self, order_id: str) -> StepResult:
        self._call("restock", order_id)
        reservation = self.reservations[order_id]
        if reservation["status"] == "COMMITTED":
            for sku, quantity in reservation["lines"].items():
                self.stock[sku] += quantity
            reservation["status"] = "RESTOCKED"
        return StepResult(ok=True)


@dataclass
class FakePayments(Switchable):
    """payments as orders' PaymentsClient sees it: one payment per order, refunds keep a tombstone."""

    payments: dict[str, dict] = field(default_factory=dict)
    cards: dict[str, str] = field(default_factory=dict)  # token -> number, as the processor keeps it
    down: bool = False
    charges: int = 0
    refunds: int = 0

    def _check(self) -> None:
        if self.down:
            raise ServiceUnavailable("payments", "down")

    async def tokenize(self, card: Card, customer_id: str) -> CardToken:
        self._check()
        if not card.number.isdigit():
            raise InvalidCard("The card was refused: invalid number", "invalid_number")
        token = f"tok_{uuid.uuid4().hex}"
        self.cards[token] = card.number
        return CardToken(token, "visa", card.number[-4:])

    async def charge(self, *, order_id: str, customer_id: str, amount_cents: int, currency: str,
                     card_token: str) -> StepResult:
        self._check()
        self.charges += 1
        payment = self.payments.get(order_id)
        if payment is not None and payment["status"] == "VOIDED":
            return StepResult(ok=False, reason="payment voided")
        if payment is None:
            declined = self.cards[card_token].endswith("0002")
            payment = self.payments[order_id] = {"id": str(uuid.uuid4()), "amount_cents": amount_cents,
                                                 "status": "DECLINED" if declined else "CAPTURED"}
        if payment["status"] == "DECLINED":
            return StepResult(ok=False, reason=DECLINED_REASON, payment_id=payment["id"])
        return StepResult(ok=True, payment_id=payment["id"])

    async def refund(self, order_id: str) -> StepResult:
        self._check()
        self.refunds += 1
        payment = self.payments.setdefault(order_id, {"id": str(uuid.uuid4()), "status": "VOIDED"})
        if payment["status"] == "CAPTURED":
            payment["status"] = "REFUNDED"
        return StepResult(ok=True)


APPROVED = Card(number="4242424242424242", expiry_month=12, expiry_year=2030, cvc="123")
DECLINED = Card(number="4000000000000002", expiry_month=12, expiry_year=2030, cvc="123")


def checkout(*lines: tuple[str, int], card: Card = APPROVED) -> Checkout:
    return Checkout(lines=lines or (("mug", 2),), card=card)


@dataclass
class World:
    inventory: FakeInventory
    payments: FakePayments
    store: OrderStore
    saga: SagaRunner
    orders: Orders
    metrics: ServiceMetrics  # the saga's figures, as orders' /metrics shows them

    def customer(self, customer_id: str = "c1") -> Principal:
        return Principal(id=customer_id, role="customer", email=f"{customer_id}@example.com")


@pytest.fixture
async def world():
    db = await memory_database(Base.metadata)
    inventory, payments, store, metrics = FakeInventory(), FakePayments(), OrderStore(db), ServiceMetrics()
    saga = SagaRunner(store, inventory, payments, lease_seconds=10, deadline_seconds=60, metrics=metrics)
    orders = Orders(store, inventory, payments, saga, fingerprint_key="k", checkout_wait=5)
    yield World(inventory, payments, store, saga, orders, metrics)
    await saga.stop()
    await db.dispose()


@pytest.fixture
def make_checkout():
    return checkout


@pytest.fixture
def cards():
    return {"approved": APPROVED, "declined": DECLINED}

