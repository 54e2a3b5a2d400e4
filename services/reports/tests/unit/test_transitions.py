"""The status tables in full: every status an order or payment can hold, against every event that
can arrive, and the events reports consumes."""

import pytest

from microshop_chassis.contracts import EventType
from microshop_reports.domain import (
    CONSUMED_EVENTS,
    ORDER_EVENTS,
    PAYMENT_EVENTS,
    OrderStatus,
    PaymentStatus,
    advance_order,
    advance_payment,
)
from microshop_reports.service import CONSUMED_SUBJECTS

P, C, R, X = OrderStatus.PLACED, OrderStatus.CONFIRMED, OrderStatus.REJECTED, OrderStatus.CANCELLED

# current status -> the status after an event of each kind: PLACED, CONFIRMED, REJECTED, CANCELLED
ORDER_TABLE = {
    None: (P, C, R, X),
    P: (P, C, R, X),
    C: (C, C, C, X),  # the first outcome of a checkout stands
    R: (R, R, R, X),  # (orders never cancels a rejected order; the later step would win)
    X: (X, X, X, X),
}


@pytest.mark.parametrize("current", ORDER_TABLE, ids=str)
def test_order_status_table(current):
    assert tuple(advance_order(current, incoming) for incoming in (P, C, R, X)) == ORDER_TABLE[current]


@pytest.mark.parametrize(
    ("current", "after_capture", "after_refund"),
    [
        (None, PaymentStatus.CAPTURED, PaymentStatus.REFUNDED),
        (PaymentStatus.CAPTURED, PaymentStatus.CAPTURED, PaymentStatus.REFUNDED),
        (PaymentStatus.REFUNDED, PaymentStatus.REFUNDED, PaymentStatus.REFUNDED),
    ],
)
def test_payment_status_table(current, after_capture, after_refund):
    assert advance_payment(current, PaymentStatus.CAPTURED) is after_capture
    assert advance_payment(current, PaymentStatus.REFUNDED) is after_refund


def test_each_order_event_sets_its_own_status():
    assert {event_type.value: status.value for event_type, status in ORDER_EVENTS.items()} == {
        "OrderPlaced": "PLACED", "OrderConfirmed": "CONFIRMED", "OrderRejected": "REJECTED",
        "OrderCancelled": "CANCELLED",
    }
    assert set(PAYMENT_EVENTS.values()) == set(PaymentStatus)


def test_reports_consumes_every_order_event_and_the_payment_money_moves():
    assert set(CONSUMED_EVENTS) == {t for t in EventType if t.source == "orders"} | {
        EventType.PAYMENT_CAPTURED, EventType.PAYMENT_REFUNDED}
    assert sorted(CONSUMED_SUBJECTS) == sorted(f"events.{t.source}.{t.value}" for t in CONSUMED_EVENTS)
