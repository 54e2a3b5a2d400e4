"""What the reports read model means, free of DuckDB, NATS and HTTP."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

# The version of the read model's table layout and of the way events are projected into it.
# Raise it whenever either changes: at start, a file with another version is dropped and rebuilt
# by replaying the event stream (the model is a projection, so there is nothing to migrate).
SCHEMA_VERSION = 1


class OrderStatus(StrEnum):
    PLACED = "PLACED"
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


class PaymentStatus(StrEnum):
    CAPTURED = "CAPTURED"
    REFUNDED = "REFUNDED"


# The events this service consumes (type -> producing service) and the status each one sets.
ORDER_EVENTS = {
    "OrderPlaced": OrderStatus.PLACED,
    "OrderConfirmed": OrderStatus.CONFIRMED,
    "OrderRejected": OrderStatus.REJECTED,
    "OrderCancelled": OrderStatus.CANCELLED,
}
PAYMENT_EVENTS = {
    "PaymentCaptured": PaymentStatus.CAPTURED,
    "PaymentRefunded": PaymentStatus.REFUNDED,
}
CONSUMED_EVENTS = {**{name: "orders" for name in ORDER_EVENTS}, **{name: "payments" for name in PAYMENT_EVENTS}}

# How far along its life an order is. CONFIRMED and REJECTED are the two ends of a checkout and
# share a rank: whichever arrived first stands. Only a CONFIRMED order can be CANCELLED.
_ORDER_RANK = {OrderStatus.PLACED: 0, OrderStatus.CONFIRMED: 1, OrderStatus.REJECTED: 1, OrderStatus.CANCELLED: 2}
_PAYMENT_RANK = {PaymentStatus.CAPTURED: 0, PaymentStatus.REFUNDED: 1}


def advance_order(current: OrderStatus | None, incoming: OrderStatus) -> OrderStatus:
    """The status after an event. Events can arrive out of order (a redelivery overtaking its
    successor), so a status only moves forward: a late OrderPlaced never undoes a confirmation."""
    if current is None or _ORDER_RANK[incoming] > _ORDER_RANK[current]:
        return incoming
    return current


def advance_payment(current: PaymentStatus | None, incoming: PaymentStatus) -> PaymentStatus:
    """Same rule for payments: a late PaymentCaptured never undoes a refund."""
    if current is None or _PAYMENT_RANK[incoming] > _PAYMENT_RANK[current]:
        return incoming
    return current


@dataclass(frozen=True)
class OrderRecord:
    """An order as the read model keeps it (one row of ``orders``, in column order)."""

    order_id: str
    customer_id: str
    status: OrderStatus
    total_cents: int
    currency: str
    placed_at: datetime | None = None
    confirmed_at: datetime | None = None
    rejected_at: datetime | None = None
    cancelled_at: datetime | None = None


@dataclass(frozen=True)
class PaymentRecord:
    """A payment as the read model keeps it (one row of ``payments``, in column order)."""

    payment_id: str
    order_id: str
    amount_cents: int
    currency: str
    status: PaymentStatus


def apply_order_event(
    current: OrderRecord | None, incoming: OrderStatus, occurred_at: datetime,
    *, order_id: str, customer_id: str, total_cents: int, currency: str,
) -> OrderRecord:
    """The order after one of its events. With no record yet (an OrderConfirmed that overtook its
    OrderPlaced) the event creates it; each event also stamps when its step happened."""
    status = advance_order(current.status if current else None, incoming)
    base = current or OrderRecord(order_id, customer_id, status, total_cents, currency)
    stamp = {f"{incoming.value.lower()}_at": occurred_at}  # placed_at, confirmed_at, ...
    return replace(base, status=status, customer_id=customer_id, total_cents=total_cents, currency=currency, **stamp)


def apply_payment_event(
    current: PaymentRecord | None, incoming: PaymentStatus,
    *, payment_id: str, order_id: str, amount_cents: int, currency: str,
) -> PaymentRecord:
    status = advance_payment(current.status if current else None, incoming)
    return PaymentRecord(payment_id, order_id, amount_cents, currency, status)


# Sales are net of cancellations: only an order CONFIRMED now counts (a cancelled one was refunded
# and restocked, a rejected one never charged).
SALE_STATUS = OrderStatus.CONFIRMED
