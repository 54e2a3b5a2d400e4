"""The events payments publishes, as typed models of their data (contracts/events/Payment*.v1),
each read straight off the payment as it stands after its move."""

from __future__ import annotations

from microshop_chassis.contracts import EventType
from microshop_chassis.events import Event, EventData
from pydantic import ConfigDict, Field

from .models import Payment


class PaymentData(EventData):
    """What every payment event carries."""

    model_config = ConfigDict(from_attributes=True)

    payment_id: str = Field(validation_alias="id")
    order_id: str
    customer_id: str
    amount_cents: int
    currency: str


class PaymentCaptured(PaymentData):
    event_type = EventType.PAYMENT_CAPTURED
    # As the row holds them; the processor always sends both with an approved charge.
    card_brand: str | None
    card_last4: str | None


class PaymentDeclined(PaymentData):
    event_type = EventType.PAYMENT_DECLINED
    decline_code: str | None  # as the row holds it; the processor always sends one with a decline


class PaymentRefunded(PaymentData):
    event_type = EventType.PAYMENT_REFUNDED


EVENTS: dict[EventType, type[PaymentData]] = {
    model.event_type: model for model in (PaymentCaptured, PaymentDeclined, PaymentRefunded)
}


def payment_event(payment: Payment, event_type: EventType) -> Event:
    """The event of ``event_type`` for ``payment`` as it stands."""
    return EVENTS[event_type].model_validate(payment).to_event()
