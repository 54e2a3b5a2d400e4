"""The events notifications reads (contracts/events/*.json) and the mail each one asks for.

notifications publishes nothing. The data models here are tolerant readers: they require what a
mail needs and ignore the rest, so a producer adding a field never breaks us.
"""

from __future__ import annotations

from microshop_chassis.contracts import EventType
from microshop_chassis.events import Event
from pydantic import BaseModel, Field, ValidationError

from .domain import TYPE_FOR_EVENT, Draft, InvalidEvent, LineItem, order_mail, welcome


class UserRegisteredData(BaseModel):
    user_id: str = Field(min_length=1, max_length=100)
    email: str = Field(min_length=3, max_length=320)
    name: str = Field(max_length=200)


class OrderItemData(BaseModel):
    sku: str = Field(min_length=1, max_length=100)
    quantity: int = Field(ge=1)
    unit_price_cents: int = Field(ge=0)


class OrderEventData(BaseModel):
    """OrderConfirmed, OrderRejected and OrderCancelled share this data."""

    order_id: str = Field(min_length=1, max_length=100)
    customer_id: str = Field(min_length=1, max_length=100)
    customer_email: str = Field(min_length=3, max_length=320)
    items: list[OrderItemData] = Field(min_length=1)
    total_cents: int = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    payment_id: str | None = None  # OrderConfirmed
    reason: str | None = None  # OrderRejected


def draft_for(event: Event) -> Draft:
    """The notification an event asks for, or InvalidEvent when its data breaks the contract."""
    if event.type not in TYPE_FOR_EVENT:
        raise InvalidEvent(f"notifications does not handle {event.type} events")
    event_type = EventType(event.type)
    try:
        if event_type is EventType.USER_REGISTERED:
            user = UserRegisteredData.model_validate(event.data)
            return welcome(user_id=user.user_id, email=user.email, name=user.name)
        order = OrderEventData.model_validate(event.data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidEvent(f"{event.type} data breaks its contract: {where}: {first['msg']}") from exc
    return order_mail(
        TYPE_FOR_EVENT[event_type],
        order_id=order.order_id,
        customer_id=order.customer_id,
        email=order.customer_email,
        items=[LineItem(i.sku, i.quantity, i.unit_price_cents) for i in order.items],
        total_cents=order.total_cents,
        currency=order.currency,
        payment_id=order.payment_id,
        reason=order.reason,
    )
