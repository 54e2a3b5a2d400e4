from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from microshop_chassis.events import Event
from microshop_reports.domain import (
    OrderStatus,
    PaymentStatus,
    advance_order,
    advance_payment,
    apply_order_event,
    apply_payment_event,
)
from microshop_reports.schemas import OrderEventData, PaymentEventData, parse_event_data


@pytest.mark.parametrize(
    ("current", "incoming", "expected"),
    [
        (None, OrderStatus.CONFIRMED, OrderStatus.CONFIRMED),  # confirmation seen before placement
        (OrderStatus.PLACED, OrderStatus.CONFIRMED, OrderStatus.CONFIRMED),
        (OrderStatus.CONFIRMED, OrderStatus.PLACED, OrderStatus.CONFIRMED),  # late placement
        (OrderStatus.CONFIRMED, OrderStatus.CANCELLED, OrderStatus.CANCELLED),
        (OrderStatus.CANCELLED, OrderStatus.CONFIRMED, OrderStatus.CANCELLED),  # late confirmation
        (OrderStatus.REJECTED, OrderStatus.CONFIRMED, OrderStatus.REJECTED),  # first outcome stands
        (OrderStatus.PLACED, OrderStatus.REJECTED, OrderStatus.REJECTED),
    ],
)
def test_order_status_only_moves_forward(current, incoming, expected):
    assert advance_order(current, incoming) is expected


def test_a_late_capture_does_not_undo_a_refund():
    assert advance_payment(None, PaymentStatus.REFUNDED) is PaymentStatus.REFUNDED
    assert advance_payment(PaymentStatus.REFUNDED, PaymentStatus.CAPTURED) is PaymentStatus.REFUNDED
    assert advance_payment(PaymentStatus.CAPTURED, PaymentStatus.REFUNDED) is PaymentStatus.REFUNDED


def test_event_data_is_parsed_by_type():
    order = {"order_id": "o1", "customer_id": "c1", "total_cents": 300, "currency": "USD",
             "items": [{"sku": "mug", "quantity": 2, "unit_price_cents": 150}]}
    payment = {"payment_id": "p1", "order_id": "o1", "amount_cents": 300, "currency": "USD"}
    assert isinstance(parse_event_data(Event(type="OrderCancelled", source="orders", data=order)), OrderEventData)
    assert isinstance(parse_event_data(Event(type="PaymentRefunded", source="payments", data=payment)),
                      PaymentEventData)
    assert parse_event_data(Event(type="UserRegistered", source="users", data={})) is None
    with pytest.raises(ValidationError):
        parse_event_data(Event(type="OrderPlaced", source="orders", data={**order, "items": []}))


def test_an_order_is_folded_from_its_events_in_any_order():
    t1, t2 = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)
    facts = {"order_id": "o1", "customer_id": "c1", "total_cents": 300, "currency": "USD"}
    confirmed_first = apply_order_event(None, OrderStatus.CONFIRMED, t2, **facts)
    assert confirmed_first.status is OrderStatus.CONFIRMED and confirmed_first.placed_at is None
    then_placed = apply_order_event(confirmed_first, OrderStatus.PLACED, t1, **facts)
    assert then_placed.status is OrderStatus.CONFIRMED
    assert (then_placed.placed_at, then_placed.confirmed_at) == (t1, t2)


def test_a_payment_is_folded_from_its_events():
    facts = {"payment_id": "p1", "order_id": "o1", "amount_cents": 300, "currency": "USD"}
    refunded = apply_payment_event(None, PaymentStatus.REFUNDED, **facts)
    assert apply_payment_event(refunded, PaymentStatus.CAPTURED, **facts).status is PaymentStatus.REFUNDED
