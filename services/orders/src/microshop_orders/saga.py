"""The checkout saga's engine: runs the steps of domain.py against inventory and payments and
persists every move in orders' database, so a crash resumes where it stopped.

Guarding every move with ``WHERE saga_step = <the step just run>`` makes two drivers of one saga
(a request and the recovery loop, or two replicas) harmless: the calls are idempotent, and only
one of them can record the transition (and so publish its event).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa
import structlog
from microshop_chassis.db import Database, utcnow
from microshop_chassis.events import Event
from microshop_chassis.outbox import add_event

from .clients import DownstreamError, InventoryClient, PaymentsClient
from .domain import DEADLINE_REASON, Step, StepResult, Transition, deadline_transition, next_transition
from .models import Order

log = structlog.get_logger("microshop.orders.saga")


class SagaStalled(Exception):
    """A step failed for a technical reason; the saga will be retried by the recovery loop."""


def order_event(order: Order, event_type: str) -> Event:
    data = {
        "order_id": order.id,
        "customer_id": order.customer_id,
        "customer_email": order.customer_email,
        "items": [
            {"sku": line.sku, "quantity": line.quantity, "unit_price_cents": line.unit_price_cents}
            for line in order.lines
        ],
        "total_cents": order.total_cents,
        "currency": order.currency,
    }
    if event_type == "OrderConfirmed":
        data["payment_id"] = order.payment_id
    if event_type == "OrderRejected":
        data["reason"] = order.reason or "rejected"
    return Event(type=event_type, source="orders", data=data)


class SagaRunner:
    def __init__(self, db: Database, inventory: InventoryClient, payments: PaymentsClient, *,
                 lease_seconds: float, deadline_seconds: float = 60.0) -> None:
        self.db = db
        self.deadline = timedelta(seconds=deadline_seconds)
        self.inventory = inventory
        self.payments = payments
        self.lease = timedelta(seconds=lease_seconds)
        self._running: dict[str, asyncio.Task] = {}

    # --- driving one saga ---------------------------------------------------------------------

    def start(self, order_id: str) -> asyncio.Task:
        """Drive the saga in a task of its own (one per order in this process), so it goes on
        even when the HTTP request that started it has answered or gone."""
        task = self._running.get(order_id)
        if task is None or task.done():
            task = asyncio.create_task(self._drive_logged(order_id), name=f"saga-{order_id}")
            self._running[order_id] = task
            task.add_done_callback(lambda _t: self._running.pop(order_id, None))
        return task

    async def _drive_logged(self, order_id: str) -> Order | None:
        try:
            return await self.drive(order_id)
        except SagaStalled:
            return None

    async def drive(self, order_id: str) -> Order:
        order = await self.load(order_id)
        while True:
            step = Step(order.saga_step)
            if step is Step.DONE:
                return order
            given_up = deadline_transition(step) if utcnow() > order.created_at + self.deadline else None
            if given_up is not None:
                if not await self._record(order, step, given_up, reason=DEADLINE_REASON, payment_id=None):
                    order = await self.load(order_id)
                continue
            try:
                result = await self._execute(step, order)
            except DownstreamError as exc:
                await self._record_failure(order, step, str(exc))
                raise SagaStalled(str(exc)) from exc
            if not await self._advance(order, step, result):
                order = await self.load(order_id)  # another driver moved it: continue from there

    async def _execute(self, step: Step, order: Order) -> StepResult:
        match step:
            case Step.RESERVE_STOCK:
                return await self.inventory.reserve(order.id, [(line.sku, line.quantity) for line in order.lines])
            case Step.CHARGE_PAYMENT:
                return await self.payments.charge(
                    order_id=order.id, customer_id=order.customer_id, amount_cents=order.total_cents,
                    currency=order.currency, card_token=order.card_token,
                )
            case Step.COMMIT_STOCK:
                return await self.inventory.commit(order.id)
            case Step.RELEASE_STOCK:
                return await self.inventory.release(order.id)
            case Step.REFUND_PAYMENT | Step.CANCEL_REFUND:
                return await self.payments.refund(order.id)
            case Step.CANCEL_RESTOCK:
                return await self.inventory.restock(order.id)
        raise AssertionError(f"no action for step {step}")

    async def _advance(self, order: Order, step: Step, result: StepResult) -> bool:
        transition = next_transition(step, result)
        recorded = await self._record(order, step, transition, reason=result.reason, payment_id=result.payment_id)
        if recorded:
            log.info("saga_step", order_id=order.id, step=step.value, ok=result.ok,
                     next_step=transition.step.value, status=transition.status.value, reason=result.reason)
        return recorded

    async def _record(self, order: Order, step: Step, transition: Transition, *, reason: str | None,
                      payment_id: str | None) -> bool:
        """Record the move in one transaction (with its event, if any) and apply it to ``order``
        in memory, so the next step needs no reload. False if another driver recorded it first."""
        now = utcnow()
        changes = {
            "saga_step": transition.step.value,
            "status": transition.status.value,
            "reason": reason or order.reason,
            "payment_id": payment_id or order.payment_id,
            "saga_attempts": 0,
            "saga_last_error": None,
            "saga_lease_until": now + self.lease,
            "updated_at": now,
        }
        orders = Order.__table__
        async with self.db.transaction() as session:
            moved = await session.execute(
                sa.update(orders).where(orders.c.id == order.id, orders.c.saga_step == step.value).values(**changes)
            )
            if moved.rowcount != 1:
                return False
            for name, value in changes.items():
                setattr(order, name, value)
            if transition.event:
                await add_event(session, order_event(order, transition.event))
        if reason == DEADLINE_REASON:
            log.warning("saga_deadline_passed", order_id=order.id, step=step.value, next_step=transition.step.value)
        return True

    async def _record_failure(self, order: Order, step: Step, error: str) -> None:
        attempts = order.saga_attempts + 1
        # Capped exponential backoff: the recovery loop takes the saga again once this passes.
        retry_in = timedelta(seconds=min(0.25 * 2 ** min(attempts, 8), self.lease.total_seconds()))
        orders = Order.__table__
        async with self.db.transaction() as session:
            await session.execute(
                sa.update(orders)
                .where(orders.c.id == order.id, orders.c.saga_step == step.value)
                .values(saga_attempts=attempts, saga_last_error=error[:500], saga_lease_until=utcnow() + retry_in)
            )
        log.warning("saga_step_failed", order_id=order.id, step=step.value, attempt=attempts, error=error)

    async def load(self, order_id: str) -> Order:
        """The order as stored, lines included (a detached object: the saga never lazy-loads)."""
        async with self.db.session() as session:
            order = await session.get(Order, order_id, populate_existing=True)
            if order is None:
                raise LookupError(order_id)
            return order

    # --- recovery -------------------------------------------------------------------------------

    async def claim_due(self, *, ignore_leases: bool = False, limit: int = 100) -> list[str]:
        """Take the open sagas whose lease ran out (a crashed driver's, or a failed step's backoff)."""
        now = utcnow()
        due = Order.saga_step != Step.DONE.value
        if not ignore_leases:
            due = sa.and_(due, Order.saga_lease_until < now)
        claimed = []
        async with self.db.transaction() as session:
            query = sa.select(Order.id).where(due).order_by(Order.created_at).limit(limit)
            for order_id in (await session.execute(query)).scalars().all():
                if order_id in self._running:
                    continue
                guard = Order.id == order_id
                if not ignore_leases:
                    guard = sa.and_(guard, Order.saga_lease_until < now)  # only one replica wins
                result = await session.execute(
                    sa.update(Order).where(guard).values(saga_lease_until=now + self.lease)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:
                    claimed.append(order_id)
        return claimed

    async def recover_forever(self, interval: float, *, take_over_at_start: bool) -> None:
        """Drive every open saga to its end. At start, a single-writer database (SQLite) means no
        other process can be driving one, so every open saga is taken over at once."""
        ignore_leases = take_over_at_start
        while True:
            try:
                for order_id in await self.claim_due(ignore_leases=ignore_leases):
                    log.info("saga_resumed", order_id=order_id)
                    self.start(order_id)
                ignore_leases = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be briefly away; try again next round
                log.warning("saga_recovery_failed", error=str(exc))
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
