"""What the reports read model means, free of DuckDB, NATS and HTTP."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from microshop_chassis.contracts import EventType

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


# The events this service consumes and the status each one sets.
ORDER_EVENTS: dict[EventType, OrderStatus] = {
    EventType.ORDER_PLACED: OrderStatus.PLACED,
    EventType.ORDER_CONFIRMED: OrderStatus.CONFIRMED,
    EventType.ORDER_REJECTED: OrderStatus.REJECTED,
    EventType.ORDER_CANCELLED: OrderStatus.CANCELLED,
}
PAYMENT_EVENTS: dict[EventType, PaymentStatus] = {
    EventType.PAYMENT_CAPTURED: PaymentStatus.CAPTURED,
    EventType.PAYMENT_REFUNDED: PaymentStatus.REFUNDED,
}
CONSUMED_EVENTS: dict[EventType, OrderStatus | PaymentStatus] = {**ORDER_EVENTS, **PAYMENT_EVENTS}

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


# --- what the model answers -------------------------------------------------------------------


@dataclass(frozen=True)
class SkuSales:
    sku: str
    units: int
    revenue_cents: int


@dataclass(frozen=True)
class Sales:
    """Figures over orders CONFIRMED now, plus counts of the other states and payment totals."""

    orders_confirmed: int
    revenue_cents: int
    units_sold: int
    by_product: list[SkuSales]  # by revenue descending, then sku
    orders_placed: int
    orders_rejected: int
    orders_cancelled: int
    payments_captured_cents: int  # every payment captured, including those refunded later
    payments_refunded_cents: int


@dataclass(frozen=True)
class ModelStatus:
    """How current the model is."""

    events_applied: int
    last_event_at: datetime | None
    schema_version: int | None  # None until a replay has filled the model
    code_schema_version: int
    replaying: bool  # the durable consumer is held meanwhile
    consumer_pending: int | None  # None when the broker cannot say


@dataclass(frozen=True)
class RebuildSummary:
    events_replayed: int  # read from the stream
    events_applied: int  # of those, the ones that changed the model (not duplicates or malformed)
    duration_ms: int


# --- what can go wrong, in the domain's terms (api.py answers each with its problem type) ------


class ReportsError(Exception):
    """A request reports refuses; the model was left as it was."""


class RebuildInProgress(ReportsError):
    def __init__(self) -> None:
        super().__init__("A rebuild is already running.")


class BrokerUnavailable(ReportsError):
    def __init__(self) -> None:
        super().__init__("Not connected to the broker; cannot replay.")


class ReplayFailed(ReportsError):
    """Reading the stream or filling the fresh tables failed; they were dropped."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"The replay failed: {type(cause).__name__}: {cause}")
