"""From each event notifications consumes to the mail it asks for, and the readers of their data
against the producers' contracts."""

import pytest
from microshop_chassis.contracts import EventType
from microshop_chassis.testing import assert_event_matches_contract, contract_schema
from microshop_notifications.domain import EVENT_FOR_TYPE, TYPE_FOR_EVENT, NotificationType
from microshop_notifications.events import OrderEventData, UserRegisteredData, draft_for


def test_every_kind_of_mail_comes_from_one_event_type():
    assert set(TYPE_FOR_EVENT.values()) == set(NotificationType)
    assert {event: kind for kind, event in EVENT_FOR_TYPE.items()} == TYPE_FOR_EVENT


def test_a_registration_drafts_a_welcome_to_the_new_user(events):
    event = events.user_registered("Ada")
    draft = draft_for(event)
    assert draft.type is NotificationType.WELCOME and draft.order_id is None
    assert (draft.user_id, draft.recipient) == (event.data["user_id"], event.data["email"])
    assert draft.subject == "Welcome to microshop, Ada"


@pytest.mark.parametrize(
    ("event_type", "kind", "subject_end", "body_part"),
    [
        ("OrderConfirmed", NotificationType.ORDER_CONFIRMED, "confirmed", "Payment reference: pay-1"),
        ("OrderRejected", NotificationType.ORDER_REJECTED, "could not be completed", "Out of stock: BOOK-1"),
        ("OrderCancelled", NotificationType.ORDER_CANCELLED, "cancelled", "The payment of 28.00 USD will be refunded."),
    ],
)
def test_each_order_outcome_drafts_its_mail_to_the_customer(events, event_type, kind, subject_end, body_part):
    event = events.order(event_type)
    assert_event_matches_contract(event.model_dump(mode="json"))  # the test data obeys the contract
    draft = draft_for(event)
    assert draft.type is kind and draft.order_id == event.data["order_id"]
    assert (draft.user_id, draft.recipient) == (event.data["customer_id"], event.data["customer_email"])
    assert draft.subject == f"Order {event.data['order_id'][:8]} {subject_end}"
    assert body_part in draft.body and "Total: 28.00 USD" in draft.body


@pytest.mark.parametrize(
    ("reader", "event_type"),
    [(UserRegisteredData, EventType.USER_REGISTERED)]
    + [(OrderEventData, t) for t in (EventType.ORDER_CONFIRMED, EventType.ORDER_REJECTED, EventType.ORDER_CANCELLED)],
)
def test_the_readers_ask_only_for_what_the_producers_promise(reader, event_type):
    schema = contract_schema(event_type.value)
    declared, promised = set(schema["properties"]), set(schema["required"])
    read = set(reader.model_fields)
    required = {name for name, field in reader.model_fields.items() if field.is_required()}
    assert read - declared <= {"payment_id", "reason"}  # each declared by the order event that has it
    assert required <= promised, f"{reader.__name__} requires what {event_type} does not promise"
