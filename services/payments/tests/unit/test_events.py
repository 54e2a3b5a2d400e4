"""The producer end of payments' events: each typed model matches its contract in contracts/events,
and an event built from a payment validates against it."""

from datetime import UTC, datetime

import pytest
from microshop_chassis.contracts import EventType
from microshop_chassis.testing import assert_event_matches_contract, assert_event_model_matches_contract
from microshop_payments.events import EVENTS, payment_event
from microshop_payments.models import Payment


@pytest.mark.parametrize("model", EVENTS.values(), ids=lambda model: model.__name__)
def test_event_model_matches_its_contract(model):
    assert_event_model_matches_contract(model)


def test_payments_publishes_every_payment_event_type():
    assert set(EVENTS) == {t for t in EventType if t.source == "payments"}


@pytest.mark.parametrize("event_type", EVENTS)
def test_an_event_built_from_a_payment_is_valid(event_type):
    now = datetime.now(UTC)
    payment = Payment(id="p-1", order_id="o-1", customer_id="c-1", amount_cents=2599, currency="USD",
                      status="CAPTURED", card_brand="visa", card_last4="4242", decline_code="card_declined",
                      created_at=now, updated_at=now)
    event = payment_event(payment, event_type)
    assert event.type == event_type and event.source == "payments"
    assert event.data["payment_id"] == "p-1" and event.data["amount_cents"] == 2599
    assert_event_matches_contract(event.model_dump(mode="json"))
