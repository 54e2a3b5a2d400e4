"""The checkout's business figures at orders' ``/metrics``, counted as the saga records its moves:
once per move, since a move another driver recorded first is not recorded (nor counted) again.

Labels take a few fixed values (outcomes, steps, causes), never an order's reason in words (it
names SKUs), so each metric keeps a handful of series. deploy/observability/ builds the checkout
SLOs and the business dashboard on them.
"""

from __future__ import annotations

from microshop_chassis.db import utcnow
from microshop_chassis.metrics import ServiceMetrics

from .domain import OrderStatus, Step, Transition
from .models import Order

# Why a checkout turns to rejection, by the forward step its callee refused.
REFUSAL_CAUSES = {
    Step.RESERVE_STOCK: "out_of_stock",
    Step.CHARGE_PAYMENT: "payment_declined",
    Step.COMMIT_STOCK: "reservation_expired",
}
DEADLINE_CAUSE = "deadline"
REFUSED_FOR_GOOD_CAUSE = "refused_for_good"  # a 4xx outside the protocol: see domain.py

COMPENSATIONS = frozenset({Step.RELEASE_STOCK, Step.REFUND_PAYMENT})
# A cancellation ends a confirmed order days later: neither a checkout's outcome nor its duration.
CANCELLATION = frozenset({Step.CANCEL_REFUND, Step.CANCEL_RESTOCK})


class SagaMetrics:
    def __init__(self, metrics: ServiceMetrics) -> None:
        self.checkouts = metrics.counter(
            "checkouts_total", "Checkouts ended, by outcome: CONFIRMED, REJECTED or NEEDS_ATTENTION.", ["outcome"])
        self.revenue = metrics.counter(
            "revenue_cents_total", "Totals of the orders confirmed, in minor units of their currency "
            "(refunds of later cancellations are not subtracted).", ["currency"])
        self.rejections = metrics.counter(
            "order_rejections_total", "Checkouts turned to rejection, by cause (counted when the saga decides, "
            "before its compensation runs).", ["reason"])
        self.compensations = metrics.counter(
            "saga_compensations_total", "Compensation steps completed, by step.", ["step"])
        self.duration = metrics.histogram(
            "saga_duration_seconds", "Time from an order placed to the end of its checkout saga.")
        self.cancellations = metrics.counter(
            "order_cancellations_total", "Cancellations of confirmed orders ended, by outcome: CANCELLED or "
            "NEEDS_ATTENTION.", ["outcome"])
        self.given_up = metrics.counter(
            "saga_steps_given_up_total", "Saga steps a callee refused for good (a 4xx outside the protocol): "
            "compensated at once instead of retried.", ["step"])
        self.needs_attention = metrics.counter(
            "orders_needs_attention_total", "Orders whose saga stopped in NEEDS_ATTENTION: a compensation met a "
            "state it cannot move from. Each one needs an operator.", ["step"])

    def recorded(self, order: Order, step: Step, transition: Transition, *, rejection_cause: str | None) -> None:
        """Count a move the saga recorded: ``order`` as it is after the move, ``step`` the step it
        left, ``rejection_cause`` set when this move turns the checkout to rejection."""
        if rejection_cause is not None:
            self.rejections.labels(rejection_cause).inc()
        if transition.status is OrderStatus.NEEDS_ATTENTION:
            self.needs_attention.labels(step.value).inc()
        elif step in COMPENSATIONS:
            self.compensations.labels(step.value).inc()
        if transition.step is not Step.DONE:
            return
        if step in CANCELLATION:
            self.cancellations.labels(transition.status.value).inc()
            return
        self.checkouts.labels(transition.status.value).inc()
        self.duration.observe((utcnow() - order.created_at).total_seconds())
        if transition.status is OrderStatus.CONFIRMED:
            self.revenue.labels(order.currency).inc(order.total_cents)
