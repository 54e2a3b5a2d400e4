"""Shapes at the edges: the event data we read (contracts/events/*.json) and the API's answers.

Event data models are tolerant readers: they require what a mail needs and ignore the rest, so a
producer adding a field never breaks us.
"""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from .domain import DeliveryStatus, NotificationType


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every one we store is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


# --- event data (inbound) ---------------------------------------------------------------------


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


# --- API (outbound) ---------------------------------------------------------------------------


class NotificationSummary(BaseModel):
    id: str
    type: NotificationType
    order_id: str | None
    subject: str
    status: DeliveryStatus
    created_at: UtcDatetime


class NotificationDetail(NotificationSummary):
    user_id: str
    recipient: str
    body: str
    attempts: int = Field(description="Delivery attempts that failed so far.")
    last_error: str | None = Field(description="Why the last attempt failed; shown to admins only.")
    sent_at: UtcDatetime | None
