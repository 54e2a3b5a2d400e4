"""An in-memory card processor (what payments' CardProcessor adapter sees of it), and payments' own
database in SQLite memory through its real store: the use cases run in milliseconds, with no
server, broker or process."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from microshop_chassis.db import Database
from microshop_chassis.testing import memory_database, outbox_events
from microshop_payments.domain import IdempotencyKeyReused, InvalidCard, UnknownCardToken
from microshop_payments.models import Base, Payment
from microshop_payments.processor import CardToken, ChargeResult, ProcessorUnavailable
from microshop_payments.service import Payments

APPROVED = "4242424242424242"
DECLINES = {"4000000000000002": "card_declined", "4000000000009995": "insufficient_funds"}


@dataclass
class FakeCharge:
    id: str
    key: str
    token: str
    amount_cents: int
    currency: str
    description: str
    last4: str
    decline_code: str | None
    refunded: bool = False

    @property
    def approved(self) -> bool:
        return self.decline_code is None

    def result(self) -> ChargeResult:
        return ChargeResult(charge_id=self.id, approved=self.approved, brand="visa", last4=self.last4,
                            decline_code=self.decline_code, description=self.description)


@dataclass
class FakeCardProcessor:
    """The card processor behind payments' adapter: charges and refunds keyed like the real one.

    ``down``: nothing reaches it (every call is ``ProcessorUnavailable``, with no effect).
    ``lose_answers_to``: calls by these names ("charge", "refund", ...) take effect, then their
    answer is lost (``ProcessorUnavailable``). ``before_charge``: awaited once when the next charge
    request arrives, before the charge is made: what happens while a charge is in flight.
    """

    cards: dict[str, str] = field(default_factory=dict)  # token -> number
    charges: dict[str, FakeCharge] = field(default_factory=dict)  # by idempotency key
    refunds: dict[str, str] = field(default_factory=dict)  # idempotency key -> refund id
    calls: list[str] = field(default_factory=list)
    down: bool = False
    lose_answers_to: set[str] = field(default_factory=set)
    before_charge: Callable[[], Awaitable[object]] | None = None

    def _reach(self, call: str) -> None:
        self.calls.append(call)
        if self.down:
            raise ProcessorUnavailable("down")

    def _answer(self, call: str) -> None:
        if call in self.lose_answers_to:
            raise ProcessorUnavailable("answer lost")

    async def tokenize(self, *, number: str, exp_month: int, exp_year: int, cvc: str) -> CardToken:
        self._reach("tokenize")
        digits = number.replace(" ", "")
        if not digits.isdigit() or len(digits) < 12:
            raise InvalidCard("The card was refused: invalid number", "invalid_number")
        token = f"tok_{uuid.uuid4().hex}"
        self.cards[token] = digits
        self._answer("tokenize")
        return CardToken(token=token, brand="visa", last4=digits[-4:])

    async def charge(self, *, idempotency_key: str, token: str, amount_cents: int, currency: str,
                     description: str) -> ChargeResult:
        self._reach("charge")
        if self.before_charge is not None:
            in_flight, self.before_charge = self.before_charge, None
            await in_flight()
        charge = self.charges.get(idempotency_key)
        if charge is not None:
            if (charge.token, charge.amount_cents, charge.currency, charge.description) != (
                    token, amount_cents, currency, description):
                raise IdempotencyKeyReused()
        else:
            number = self.cards.get(token)
            if number is None:
                raise UnknownCardToken()
            charge = self.charges[idempotency_key] = FakeCharge(
                id=f"ch_{uuid.uuid4().hex[:12]}", key=idempotency_key, token=token, amount_cents=amount_cents,
                currency=currency, description=description, last4=number[-4:], decline_code=DECLINES.get(number))
        self._answer("charge")
        return charge.result()

    async def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        self._reach("find_charge")
        charge = self.charges.get(idempotency_key)
        self._answer("find_charge")
        return charge.result() if charge else None

    async def refund(self, *, idempotency_key: str, charge_id: str) -> str:
        self._reach("refund")
        if idempotency_key not in self.refunds:
            [charge] = [c for c in self.charges.values() if c.id == charge_id]
            assert charge.approved and not charge.refunded, charge
            charge.refunded = True
            self.refunds[idempotency_key] = f"re_{uuid.uuid4().hex[:12]}"
        self._answer("refund")
        return self.refunds[idempotency_key]

    def live_charges(self) -> list[FakeCharge]:
        """Money the processor holds for the shop: approved charges not given back."""
        return [c for c in self.charges.values() if c.approved and not c.refunded]


@dataclass
class World:
    db: Database
    processor: FakeCardProcessor
    payments: Payments

    async def token(self, number: str = APPROVED) -> str:
        return (await self.payments.tokenize(number=number, exp_month=12, exp_year=2030, cvc="123")).token

    async def charge(self, order_id: str, token: str, *, amount_cents: int = 2599, key: str | None = None,
                     customer_id: str = "c-1") -> Payment:
        return await self.payments.charge(idempotency_key=key or f"order-{order_id}", order_id=order_id,
                                          customer_id=customer_id, amount_cents=amount_cents, currency="USD",
                                          card_token=token)

    async def status(self, order_id: str) -> str | None:
        payment = await self.payments.store.find(order_id)
        return payment.status if payment else None

    async def statuses(self) -> dict[str, int]:
        """Payments by status, only the statuses that have any."""
        return {status: n for status, n in (await self.payments.ledger()).payments_by_status.items() if n}

    async def money(self) -> tuple[int, int, int]:
        """The ledger's (captured, refunded, net) cents."""
        totals = await self.payments.ledger()
        return totals.captured_cents, totals.refunded_cents, totals.net_cents

    async def event_types(self) -> list[str]:
        return [event["type"] for event in await outbox_events(self.db)]


@pytest.fixture
async def world():
    db = await memory_database(Base.metadata)
    processor = FakeCardProcessor()
    yield World(db, processor, Payments(db, processor))
    await db.dispose()


@pytest.fixture
def cards() -> dict[str, str]:
    return {"approved": APPROVED, "declined": "4000000000000002", "no_funds": "4000000000009995"}
