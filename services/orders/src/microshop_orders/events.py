"""The events orders publishes, as typed models of their data (contracts/events/Order*.v1),
each read straight off the order as it stands."""

from __future__ import annotations

from microshop_chassis.contracts import EventType
from microshop_chassis.events import Event, EventData
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .models import Order


class OrderLineData(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sku: str
    quantity: int
    unit_price_cents: int


class OrderData(EventData):
    """What every order event carries: the order, lines included."""

    model_config = ConfigDict(from_attributes=True)

    order_id: str = Field(validation_alias="id")
    customer_id: str
    customer_email: str
    items: list[OrderLineData] = Field(validation_alias="lines")
    total_cents: int
    currency: str


class OrderPlaced(OrderData):
    event_type = EventType.ORDER_PLACED


class OrderConfirmed(OrderData):
    event_type = EventType.ORDER_CONFIRMED
    payment_id: str


class OrderRejected(OrderData):
    event_type = EventType.ORDER_REJECTED
    reason: str

    @field_validator("reason", mode="before")
    @classmethod
    def some_reason(cls, reason: str | None) -> str:
        return reason or "rejected"


class OrderCancelled(OrderData):
    event_type = EventType.ORDER_CANCELLED


EVENTS: dict[EventType, type[OrderData]] = {
    model.event_type: model for model in (OrderPlaced, OrderConfirmed, OrderRejected, OrderCancelled)
}


def order_event(order: Order, event_type: EventType) -> Event:
    """The event of ``event_type`` for ``order`` as it stands."""
    return EVENTS[event_type].model_validate(order).to_event()
