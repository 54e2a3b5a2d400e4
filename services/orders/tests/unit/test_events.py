"""The producer end of orders' events: each typed model matches its contract in contracts/events,
and an event built from an order validates against it."""

import pytest
from microshop_chassis.contracts import EventType
from microshop_chassis.testing import assert_event_matches_contract, assert_event_model_matches_contract
from microshop_orders.events import EVENTS, order_event
from microshop_orders.models import Order, OrderLine


@pytest.mark.parametrize("model", EVENTS.values(), ids=lambda model: model.__name__)
def test_event_model_matches_its_contract(model):
    assert_event_model_matches_contract(model)


def test_orders_publishes_every_order_event_type():
    assert set(EVENTS) == {t for t in EventType if t.source == "orders"}


@pytest.mark.parametrize("event_type", EVENTS)
def test_an_event_built_from_an_order_is_valid(event_type):
    order = Order(id="o-1", customer_id="c-1", customer_email="c@example.com", total_cents=2400, currency="USD",
                  payment_id="p-1", reason=None, lines=[OrderLine(sku="MUG", quantity=2, unit_price_cents=1200)])
    event = order_event(order, event_type)
    assert event.type == event_type and event.source == "orders"
    assert_event_matches_contract(event.model_dump(mode="json"))
