"""orders' use cases. The HTTP layer calls these; the saga engine does the distributed part."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid

import sqlalchemy as sa
from microshop_chassis.auth import Principal
from microshop_chassis.db import Database, utcnow
from microshop_chassis.errors import Problem
from microshop_chassis.outbox import add_event
from sqlalchemy.exc import IntegrityError

from .clients import DownstreamError, InventoryClient, PaymentsClient
from .domain import FINAL_STATUSES, OrderStatus, Step, can_cancel, order_total
from .models import Order, OrderLine
from .saga import SagaRunner, order_event
from .schemas import OrderCreate


class Orders:
    def __init__(self, db: Database, inventory: InventoryClient, payments: PaymentsClient, saga: SagaRunner,
                 *, fingerprint_key: str, checkout_wait: float) -> None:
        self.db = db
        self.inventory = inventory
        self.payments = payments
        self.saga = saga
        self._fingerprint_key = fingerprint_key.encode()
        self.checkout_wait = checkout_wait

    def fingerprint(self, body: OrderCreate) -> str:
        # Keyed (HMAC), so the stored fingerprint cannot be searched for a card number.
        canonical = body.model_dump_json().encode()
        return hmac.new(self._fingerprint_key, canonical, hashlib.sha256).hexdigest()

    async def place(self, customer: Principal, key: str, body: OrderCreate) -> tuple[Order, bool]:
        """Create the order and run its saga for up to ``checkout_wait`` seconds.
        Returns the order and whether it is a replay of an earlier request with the same key."""
        fingerprint = self.fingerprint(body)
        existing = await self._by_key(customer.id, key)
        if existing is not None:
            return await self._replay(existing, fingerprint), True

        skus = [line.sku for line in body.items]
        try:
            prices, card = await asyncio.gather(self.inventory.prices(skus), self.payments.tokenize(body.payment))
        except DownstreamError as exc:
            raise Problem(503, "Checkout is unavailable right now; nothing was ordered. Try again shortly.",
                          type="checkout-unavailable", headers={"Retry-After": "2"}, cause=str(exc)) from exc
        currencies = {prices[sku].currency for sku in skus}
        if len(currencies) != 1:
            raise Problem(422, "All products of one order must share a currency.", type="mixed-currency")

        now = utcnow()
        order = Order(
            id=str(uuid.uuid4()), customer_id=customer.id, customer_email=customer.email or "",
            status=OrderStatus.PENDING.value, reason=None,
            total_cents=order_total([(line.quantity, prices[line.sku].unit_price_cents) for line in body.items]),
            currency=currencies.pop(), card_token=card.token, card_brand=card.brand, card_last4=card.last4,
            payment_id=None, idempotency_key=key, request_fingerprint=fingerprint,
            saga_step=Step.RESERVE_STOCK.value, saga_attempts=0, saga_last_error=None,
            saga_lease_until=now + self.saga.lease, created_at=now, updated_at=now,
            lines=[OrderLine(sku=line.sku, quantity=line.quantity, unit_price_cents=prices[line.sku].unit_price_cents)
                   for line in body.items],
        )
        try:
            async with self.db.transaction() as session:
                session.add(order)
                await session.flush()  # the unique (customer, key) decides between concurrent twins
                await add_event(session, order_event(order, "OrderPlaced"))
        except IntegrityError:
            existing = await self._by_key(customer.id, key)
            if existing is None:
                raise
            return await self._replay(existing, fingerprint), True
        return await self._run_for_a_while(order.id), False

    async def _replay(self, order: Order, fingerprint: str) -> Order:
        if not hmac.compare_digest(order.request_fingerprint, fingerprint):
            raise Problem(422, "This Idempotency-Key was used for a different request.",
                          type="idempotency-key-reused")
        if order.saga_step != Step.DONE.value:
            return await self._run_for_a_while(order.id)
        return order

    async def _run_for_a_while(self, order_id: str) -> Order:
        task = self.saga.start(order_id)
        # The saga goes on in its task whatever happens to this request; we only stop waiting.
        done, _ = await asyncio.wait({task}, timeout=self.checkout_wait)
        finished = task.result() if done else None  # the order as the saga left it, or None if stalled
        return finished if finished is not None else await self.saga.load(order_id)

    async def _by_key(self, customer_id: str, key: str) -> Order | None:
        async with self.db.session() as session:
            return (
                await session.execute(
                    sa.select(Order).where(Order.customer_id == customer_id, Order.idempotency_key == key)
                )
            ).scalar_one_or_none()

    async def get(self, viewer: Principal, order_id: str) -> Order:
        async with self.db.session() as session:
            order = await session.get(Order, order_id)
        if order is None or not (viewer.is_admin or viewer.is_service or order.customer_id == viewer.id):
            raise Problem(404, f"No order {order_id}.", type="order-not-found")
        return order

    async def list(self, viewer: Principal, *, status: str | None, limit: int, offset: int) -> tuple[list[Order], int]:
        where = [] if viewer.is_admin or viewer.is_service else [Order.customer_id == viewer.id]
        if status:
            where.append(Order.status == status)
        async with self.db.session() as session:
            total = (await session.execute(sa.select(sa.func.count()).select_from(Order).where(*where))).scalar_one()
            rows = await session.execute(
                sa.select(Order).where(*where).order_by(Order.created_at.desc(), Order.id).limit(limit).offset(offset)
            )
            return list(rows.scalars()), total

    async def cancel(self, viewer: Principal, order_id: str) -> Order:
        order = await self.get(viewer, order_id)
        if not can_cancel(OrderStatus(order.status), Step(order.saga_step)):
            raise Problem(409, f"Only a CONFIRMED order can be cancelled; this one is {order.status}.",
                          type="order-not-cancellable", order_status=order.status)
        if order.saga_step == Step.DONE.value:
            async with self.db.transaction() as session:
                await session.execute(
                    sa.update(Order)
                    .where(Order.id == order_id, Order.status == OrderStatus.CONFIRMED.value,
                           Order.saga_step == Step.DONE.value)
                    .values(saga_step=Step.CANCEL_REFUND.value, saga_lease_until=utcnow() + self.saga.lease,
                            updated_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
        return await self._run_for_a_while(order_id)

    async def saga_state(self, order_id: str) -> Order:
        async with self.db.session() as session:
            order = await session.get(Order, order_id)
        if order is None:
            raise Problem(404, f"No order {order_id}.", type="order-not-found")
        return order


def is_final(order: Order) -> bool:
    return OrderStatus(order.status) in FINAL_STATUSES and order.saga_step == Step.DONE.value
