"""Pydantic shapes: the event data reports reads (in) and its HTTP bodies (out)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from microshop_chassis.contracts import EventType
from microshop_chassis.events import Event

from .domain import ORDER_EVENTS, PAYMENT_EVENTS

# --- in: the parts of the event data (contracts/events/*.json) the read model needs -----------


class OrderLine(BaseModel):
    sku: str = Field(min_length=1)
    quantity: int = Field(ge=1)
    unit_price_cents: int = Field(ge=0)


class OrderEventData(BaseModel):
    """Data of OrderPlaced, OrderConfirmed, OrderRejected and OrderCancelled."""

    order_id: str = Field(min_length=1)
    customer_id: str = Field(min_length=1)
    items: list[OrderLine] = Field(min_length=1)
    total_cents: int = Field(ge=0)
    currency: str


class PaymentEventData(BaseModel):
    """Data of PaymentCaptured and PaymentRefunded."""

    payment_id: str = Field(min_length=1)
    order_id: str = Field(min_length=1)
    amount_cents: int = Field(ge=0)
    currency: str


def parse_event_data(event: Event) -> OrderEventData | PaymentEventData | None:
    """The event's data in its typed shape; None for a type reports does not consume.

    Raises pydantic.ValidationError when the data breaks its contract.
    """
    try:
        event_type = EventType(event.type)
    except ValueError:  # a type the contracts do not know
        return None
    if event_type in ORDER_EVENTS:
        return OrderEventData.model_validate(event.data)
    if event_type in PAYMENT_EVENTS:
        return PaymentEventData.model_validate(event.data)
    return None


# --- out: HTTP bodies -------------------------------------------------------------------------


class ProductSales(BaseModel):
    sku: str
    units: int
    revenue_cents: int


class SalesReport(BaseModel):
    """Figures over orders CONFIRMED now: a confirmed-then-cancelled order counts nowhere."""

    currency: str = "USD"
    orders_confirmed: int
    revenue_cents: int
    units_sold: int
    by_product: list[ProductSales] = Field(description="Sorted by revenue descending, then sku.")
    orders_placed: int = Field(description="Orders whose checkout has not finished yet.")
    orders_rejected: int
    orders_cancelled: int
    payments_captured_cents: int = Field(description="Every payment captured, including those refunded later.")
    payments_refunded_cents: int


class RebuildResult(BaseModel):
    events_replayed: int = Field(description="Events read from the stream.")
    events_applied: int = Field(description="Of those, events that changed the model (not duplicates or malformed).")
    duration_ms: int


class ReportStatus(BaseModel):
    events_applied: int = Field(description="Distinct events in the model.")
    last_event_at: datetime | None = Field(description="When the newest event applied occurred.")
    schema_version: int | None = Field(
        description="The model's version; null until its first replay finished (the code's version is "
        "code_schema_version)."
    )
    code_schema_version: int
    replaying: bool = Field(description="A rebuild is running; the durable consumer is paused.")
    consumer_pending: int | None = Field(description="Events the durable consumer has not acked; null if unknown.")
