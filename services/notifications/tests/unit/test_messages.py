"""From event to draft, and from stored notification to the e-mail put on the wire."""

import email.policy
import uuid
from datetime import UTC, datetime

import pytest
from aiosmtplib.email import flatten_message
from microshop_chassis.events import Event
from microshop_notifications import delivery
from microshop_notifications.delivery import build_message
from microshop_notifications.domain import InvalidEvent, NotificationType
from microshop_notifications.events import draft_for
from microshop_notifications.models import Notification

ORDER = {
    "order_id": "1a2b3c4d-0000-4000-8000-000000000000", "customer_id": "c-1", "customer_email": "c@example.com",
    "items": [{"sku": "BOOK-1", "quantity": 1, "unit_price_cents": 500}], "total_cents": 500, "currency": "USD",
}


def test_order_events_map_to_their_kind_and_extra_fields_are_ignored():
    kinds = {
        event_type: draft_for(Event(type=event_type, source="orders", data={**ORDER, "new_field": 1})).type
        for event_type in ("OrderConfirmed", "OrderRejected", "OrderCancelled")
    }
    assert kinds == {
        "OrderConfirmed": NotificationType.ORDER_CONFIRMED,
        "OrderRejected": NotificationType.ORDER_REJECTED,
        "OrderCancelled": NotificationType.ORDER_CANCELLED,
    }


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"customer_email": None}, "customer_email"),
        ({"items": []}, "items"),
        ({"total_cents": -1}, "total_cents"),
        ({"currency": "usd"}, "currency"),
        ({"customer_email": "nobody"}, "nobody"),
    ],
)
def test_order_data_breaking_the_contract_is_an_invalid_event(change, named):
    data = {k: v for k, v in {**ORDER, **change}.items() if v is not None}
    with pytest.raises(InvalidEvent, match=named):
        draft_for(Event(type="OrderConfirmed", source="orders", data=data))


def test_an_event_type_we_do_not_handle_is_invalid():
    with pytest.raises(InvalidEvent, match="PaymentCaptured"):
        draft_for(Event(type="PaymentCaptured", source="payments", data={}))


def test_the_message_carries_a_deterministic_id_and_tracing_headers():
    draft = draft_for(Event(type="OrderCancelled", source="orders", data=ORDER))
    now = datetime.now(UTC)
    notification = Notification(
        id=str(uuid.uuid4()), event_id=str(uuid.uuid4()), type=draft.type.value, user_id=draft.user_id,
        order_id=draft.order_id, recipient=draft.recipient, subject=draft.subject, body=draft.body,
        status="PENDING", attempts=0, next_attempt_at=now, created_at=now,
    )
    first, second = (build_message(notification, "microshop <shop@microshop.local>") for _ in range(2))
    assert first["Message-ID"] == second["Message-ID"] == f"<notification-{notification.id}@microshop.local>"
    assert first["X-Microshop-Notification-Id"] == notification.id
    assert first["X-Microshop-Event-Type"] == "OrderCancelled"
    assert first["X-Order-Id"] == ORDER["order_id"]
    assert (first["To"], first["Subject"]) == ("c@example.com", "Order 1a2b3c4d cancelled")
    assert first.get_content() == draft.body


@pytest.mark.parametrize("utf8", [False, True], ids=["7bit server", "SMTPUTF8 server"])
def test_the_cheaper_policy_puts_the_same_bytes_on_the_wire(monkeypatch, utf8):
    """The message is built with a header registry that caches its classes: what aiosmtplib
    sends is byte for byte what email.policy.default builds, UTF-8 names and text included."""
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    monkeypatch.setattr(delivery, "utcnow", lambda: at)
    draft = draft_for(Event(type="OrderConfirmed", source="orders", data=ORDER))
    notification = Notification(
        id=str(uuid.uuid4()), event_id=str(uuid.uuid4()), type=draft.type.value, user_id=draft.user_id,
        order_id=draft.order_id, recipient="zoë@example.com" if utf8 else draft.recipient,
        subject="Ihre Bestellung über 3 × Tasse – bestätigt " + "lang " * 20,
        body="Grüße, Zoë!\n" + "Tasse ä " * 30 + "\n", status="PENDING", attempts=0, next_attempt_at=at,
        created_at=at,
    )
    mail_from = '"Boutique Été" <shop@microshop.local>'
    cheap = build_message(notification, mail_from)
    monkeypatch.setattr(delivery, "MAIL_POLICY", email.policy.default)
    reference = build_message(notification, mail_from)
    assert cheap.policy is not email.policy.default
    for cte_type in ("7bit", "8bit"):
        wire = flatten_message(cheap, utf8=utf8, cte_type=cte_type)
        assert wire == flatten_message(reference, utf8=utf8, cte_type=cte_type)
    assert b"=?utf-8?" in flatten_message(cheap, cte_type="7bit")  # the name and subject encoded
