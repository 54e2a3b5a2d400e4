"""The checkout saga's engine: runs the steps of domain.py against inventory and payments and
persists every move through the store, so a crash resumes where it stopped.

``SagaRunner`` drives one saga per order in a task of its own; ``SagaRecovery`` is the background
loop that hands it every open saga whose lease ran out (a crashed driver's, a failed step's
backoff), and all of them at start on a single-writer database.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import structlog
from microshop_chassis.background import BackgroundWorker
from microshop_chassis.context import outliving_the_request
from microshop_chassis.db import utcnow
from microshop_chassis.downstream import DownstreamError, UnexpectedReply
from microshop_chassis.metrics import ServiceMetrics
from microshop_chassis.telemetry import ORDER_ID_ATTRIBUTE, SAGA_STEP_ATTRIBUTE, tracer
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from .clients import InventoryClient, PaymentsClient
from .domain import (
    DEADLINE_REASON,
    NEEDS_ATTENTION_REASON,
    OrderStatus,
    Step,
    StepResult,
    Transition,
    deadline_transition,
    give_up_transition,
    next_transition,
)
from .events import order_event
from .models import Order
from .saga_metrics import DEADLINE_CAUSE, REFUSAL_CAUSES, REFUSED_FOR_GOOD_CAUSE, SagaMetrics
from .store import OrderStore

log = structlog.get_logger("microshop.orders.saga")


class SagaStalled(Exception):
    """A step failed for a technical reason; the saga will be retried by the recovery loop."""


# What each step asks of its callee, for the reason an order gives when the callee refuses it for good.
_ASKED = {
    Step.RESERVE_STOCK: "the stock reservation",
    Step.CHARGE_PAYMENT: "the charge",
    Step.COMMIT_STOCK: "the stock commit",
    Step.RELEASE_STOCK: "the stock release",
    Step.REFUND_PAYMENT: "the refund",
    Step.CANCEL_REFUND: "the refund",
    Step.CANCEL_RESTOCK: "the restock",
}


class SagaRunner:
    def __init__(self, store: OrderStore, inventory: InventoryClient, payments: PaymentsClient, *,
                 lease_seconds: float, deadline_seconds: float = 60.0, metrics: ServiceMetrics | None = None,
                 tracer_provider: trace.TracerProvider | None = None) -> None:
        self.store = store
        self._tracer = tracer("microshop.orders.saga", tracer_provider)
        self.inventory = inventory
        self.payments = payments
        self.lease = timedelta(seconds=lease_seconds)
        self.deadline = timedelta(seconds=deadline_seconds)
        self._running: dict[str, asyncio.Task] = {}
        self.metrics = SagaMetrics(metrics or ServiceMetrics())

    # --- driving one saga ---------------------------------------------------------------------

    def start(self, order_id: str) -> asyncio.Task:
        """Drive the saga in a task of its own (one per order here), so it goes on even when the
        HTTP request that started it has answered or gone."""
        task = self._running.get(order_id)
        if task is None or task.done():
            # Without the request's deadline: the client's wait must not cut the saga's calls short.
            task = asyncio.create_task(self._drive_logged(order_id), name=f"saga-{order_id}",
                                       context=outliving_the_request())
            self._running[order_id] = task
            task.add_done_callback(lambda _t: self._running.pop(order_id, None))
        return task

    def running(self) -> set[str]:
        return set(self._running)

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
                if not await self._record(order, step, given_up, reason=DEADLINE_REASON, payment_id=None,
                                          rejection_cause=DEADLINE_CAUSE):
                    order = await self.load(order_id)
                continue
            # One span per attempt at a step (a retry after a stall is another): the saga's timeline.
            with self._tracer.start_as_current_span(
                f"saga {step.value}", attributes={ORDER_ID_ATTRIBUTE: order.id, SAGA_STEP_ATTRIBUTE: step.value},
            ) as span:
                try:
                    result = await self._execute(step, order)
                except UnexpectedReply as exc:
                    if not exc.permanent:
                        await self._record_failure(order, step, str(exc))
                        raise SagaStalled(str(exc)) from exc
                    # Repeating the request can only get the same refusal: give the step up now.
                    span.set_status(Status(StatusCode.ERROR, "refused for good"))
                    if not await self._give_up(order, step, exc):
                        order = await self.load(order_id)
                    continue
                except DownstreamError as exc:
                    await self._record_failure(order, step, str(exc))
                    raise SagaStalled(str(exc)) from exc
                span.set_attributes({"microshop.saga.ok": result.ok, "microshop.saga.next_step":
                                     next_transition(step, result).step.value})
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
        refused = not (result.ok or result.stuck)
        recorded = await self._record(order, step, transition, reason=result.reason, payment_id=result.payment_id,
                                      rejection_cause=REFUSAL_CAUSES[step] if refused else None)
        if recorded:
            log.info("saga_step", order_id=order.id, step=step.value, ok=result.ok,
                     next_step=transition.step.value, status=transition.status.value, reason=result.reason)
        return recorded

    async def _give_up(self, order: Order, step: Step, refusal: UnexpectedReply) -> bool:
        """Compensate a step its callee refused for good, saying who refused what and why."""
        transition = give_up_transition(step)
        reason = f"{refusal.target} refused {_ASKED[step]}: {refusal.title or refusal.status}"
        # A forward step given up turns the checkout to rejection; a compensation, to NEEDS_ATTENTION.
        cause = REFUSED_FOR_GOOD_CAUSE if step in REFUSAL_CAUSES else None
        recorded = await self._record(order, step, transition, reason=reason, payment_id=None, rejection_cause=cause)
        if recorded:
            self.metrics.given_up.labels(step.value).inc()
            log.error("saga_step_refused_for_good", order_id=order.id, step=step.value, error=str(refusal),
                      next_step=transition.step.value, status=transition.status.value)
        return recorded

    async def _record(self, order: Order, step: Step, transition: Transition, *, reason: str | None,
                      payment_id: str | None, rejection_cause: str | None = None) -> bool:
        """Record the move (with its event, if any) and apply it to ``order`` in memory, so the
        next step needs no reload. False if another driver recorded it first.

        Into NEEDS_ATTENTION, the customer is told only that staff will look; what went wrong is
        kept as the saga's last error (GET /orders/{id}/saga, admins)."""
        now = utcnow()
        stuck = transition.status is OrderStatus.NEEDS_ATTENTION
        changes = {
            "saga_step": transition.step.value,
            "status": transition.status.value,
            "reason": NEEDS_ATTENTION_REASON if stuck else reason or order.reason,
            "payment_id": payment_id or order.payment_id,
            "saga_attempts": 0,
            "saga_last_error": f"{step.value}: {reason}"[:500] if stuck else None,
            "saga_lease_until": now + self.lease,
            "updated_at": now,
        }
        before = {name: getattr(order, name) for name in changes}
        for name, value in changes.items():
            setattr(order, name, value)
        event = order_event(order, transition.event) if transition.event else None
        if not await self.store.move(order.id, step, changes, event):
            for name, value in before.items():
                setattr(order, name, value)
            return False
        self.metrics.recorded(order, step, transition, rejection_cause=rejection_cause)
        if reason == DEADLINE_REASON:
            log.warning("saga_deadline_passed", order_id=order.id, step=step.value, next_step=transition.step.value)
        if stuck:
            log.error("saga_needs_attention", order_id=order.id, step=step.value, reason=reason)
        return True

    async def _record_failure(self, order: Order, step: Step, error: str) -> None:
        attempts = order.saga_attempts + 1
        # Capped exponential backoff: the recovery loop takes the saga again once this passes.
        retry_in = timedelta(seconds=min(0.25 * 2 ** min(attempts, 8), self.lease.total_seconds()))
        await self.store.note_failure(order.id, step, attempts=attempts, error=error, retry_at=utcnow() + retry_in)
        log.warning("saga_step_failed", order_id=order.id, step=step.value, attempt=attempts, error=error)

    async def load(self, order_id: str) -> Order:
        order = await self.store.get(order_id)
        if order is None:
            raise LookupError(order_id)
        return order

    async def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the sagas driven here to end or stall."""
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=timeout)

    async def stop(self) -> None:
        """Cancel the sagas driven here and wait for them (each resumes from its step later)."""
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)


class SagaRecovery(BackgroundWorker):
    """Drives every open saga to its end: each round leases the sagas whose lease ran out and
    starts them. At start, a single-writer database (SQLite) means no other process can be driving
    one, so every open saga is taken over at once."""

    name = "saga-recovery"
    failure_event = "saga_recovery_failed"  # the database may be briefly away: next round

    def __init__(self, saga: SagaRunner, *, interval: float, take_over_at_start: bool) -> None:
        self.saga = saga
        self.interval = self.backoff_initial = self.backoff_max = interval
        self._ignore_leases = take_over_at_start

    async def round(self) -> bool:
        now = utcnow()
        claimed = await self.saga.store.claim_due(now=now, lease_until=now + self.saga.lease,
                                                  ignore_leases=self._ignore_leases, skip=self.saga.running())
        self._ignore_leases = False
        for order_id in claimed:
            log.info("saga_resumed", order_id=order_id)
            self.saga.start(order_id)
        return False

    async def drain(self, timeout: float) -> None:
        """At a graceful stop, the sagas under way finish their steps (up to ``timeout``): one cut
        short would wait for its lease to run out before another replica resumes it."""
        deadline = time.monotonic() + timeout
        await super().drain(timeout)
        await self.saga.wait(max(0.0, deadline - time.monotonic()))

    async def stop(self) -> None:
        await super().stop()
        await self.saga.stop()
