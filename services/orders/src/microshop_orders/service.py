"""orders' use cases: place, read and cancel orders. The saga engine does the distributed part.

Returns orders as stored (``models.Order``); refusals are the domain errors of domain.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid

from microshop_chassis.auth import Principal
from microshop_chassis.contracts import EventType
from microshop_chassis.db import utcnow
from microshop_chassis.downstream import DownstreamError

from .clients import InventoryClient, PaymentsClient
from .domain import (
    Checkout,
    CheckoutUnavailable,
    IdempotencyKeyReused,
    MixedCurrency,
    OrderNotCancellable,
    OrderNotFound,
    OrderStatus,
    Step,
    can_cancel,
    chargeable_total,
    order_total,
)
from .events import order_event
from .models import Order, OrderLine
from .saga import SagaRunner
from .store import DuplicateKey, OrderStore


class Orders:
    def __init__(self, store: OrderStore, inventory: InventoryClient, payments: PaymentsClient, saga: SagaRunner,
                 *, fingerprint_key: str, checkout_wait: float) -> None:
        self.store = store
        self.inventory = inventory
        self.payments = payments
        self.saga = saga
        self._fingerprint_key = fingerprint_key.encode()
        self.checkout_wait = checkout_wait

    def fingerprint(self, checkout: Checkout) -> str:
        # Keyed (HMAC), so the stored fingerprint cannot be searched for a card number.
        canonical = json.dumps(checkout.canonical(), separators=(",", ":"), ensure_ascii=False).encode()
        return hmac.new(self._fingerprint_key, canonical, hashlib.sha256).hexdigest()

    async def place(self, customer: Principal, key: str, checkout: Checkout) -> tuple[Order, bool]:
        """Create the order and run its saga for up to ``checkout_wait`` seconds.
        Returns the order and whether it is a replay of an earlier request with the same key."""
        fingerprint = self.fingerprint(checkout)
        existing = await self.store.by_key(customer.id, key)
        if existing is not None:
            return await self._replay(existing, fingerprint), True

        skus = [sku for sku, _ in checkout.lines]
        try:
            prices, card = await asyncio.gather(self.inventory.prices(skus),
                                                self.payments.tokenize(checkout.card, customer.id))
        except DownstreamError as exc:
            raise CheckoutUnavailable(str(exc)) from exc
        currencies = {prices[sku].currency for sku in skus}
        if len(currencies) != 1:
            raise MixedCurrency()
        currency = currencies.pop()
        total_cents = chargeable_total(
            order_total([(quantity, prices[sku].unit_price_cents) for sku, quantity in checkout.lines]), currency)

        now = utcnow()
        order = Order(
            id=str(uuid.uuid4()), customer_id=customer.id, customer_email=customer.email or "",
            status=OrderStatus.PENDING.value, reason=None, total_cents=total_cents, currency=currency,
            card_token=card.token, card_brand=card.brand, card_last4=card.last4,
            payment_id=None, idempotency_key=key, request_fingerprint=fingerprint,
            saga_step=Step.RESERVE_STOCK.value, saga_attempts=0, saga_last_error=None,
            saga_lease_until=now + self.saga.lease, created_at=now, updated_at=now,
            lines=[OrderLine(sku=sku, quantity=quantity, unit_price_cents=prices[sku].unit_price_cents)
                   for sku, quantity in checkout.lines],
        )
        try:
            await self.store.add(order, order_event(order, EventType.ORDER_PLACED))
        except DuplicateKey:
            existing = await self.store.by_key(customer.id, key)
            if existing is None:
                raise
            return await self._replay(existing, fingerprint), True
        return await self._run_for_a_while(order.id), False

    async def _replay(self, order: Order, fingerprint: str) -> Order:
        if not hmac.compare_digest(order.request_fingerprint, fingerprint):
            raise IdempotencyKeyReused()
        if order.saga_step != Step.DONE.value:
            return await self._run_for_a_while(order.id)
        return order

    async def _run_for_a_while(self, order_id: str) -> Order:
        task = self.saga.start(order_id)
        # The saga goes on in its task whatever happens to this request; we only stop waiting.
        done, _ = await asyncio.wait({task}, timeout=self.checkout_wait)
        finished = task.result() if done else None  # the order as the saga left it, or None if stalled
        return finished if finished is not None else await self.saga.load(order_id)

    async def get(self, viewer: Principal, order_id: str) -> Order:
        order = await self.store.get(order_id)
        if order is None or not (viewer.is_admin or viewer.is_service or order.customer_id == viewer.id):
            raise OrderNotFound(order_id)
        return order

    async def list(self, viewer: Principal, *, status: OrderStatus | None, limit: int,
                   offset: int) -> tuple[list[Order], int]:
        everyone = viewer.is_admin or viewer.is_service
        return await self.store.page(customer_id=None if everyone else viewer.id,
                                     status=status.value if status else None, limit=limit, offset=offset)

    async def cancel(self, viewer: Principal, order_id: str) -> Order:
        order = await self.get(viewer, order_id)
        if not can_cancel(OrderStatus(order.status), Step(order.saga_step)):
            raise OrderNotCancellable(order.status)
        if order.saga_step == Step.DONE.value:
            now = utcnow()
            await self.store.start_cancel(order_id, now=now, lease_until=now + self.saga.lease)
        return await self._run_for_a_while(order_id)

    async def saga_state(self, order_id: str) -> Order:
        order = await self.store.get(order_id)
        if order is None:
            raise OrderNotFound(order_id)
        return order
