"""The published language between services, by its Python names: the event types on the broker
and the problem types one service answers with and another acts on.

Both are declared for any language in ``contracts/`` (``events/<Type>.v<n>.schema.json`` and
``problems.json``); ``tests/contracts`` checks that these names and those files agree, so a
rename on one side fails a test instead of silently turning a refusal into retries.
"""

from __future__ import annotations

from enum import StrEnum

from .errors import ProblemType


class EventType(StrEnum):
    USER_REGISTERED = "UserRegistered"
    ORDER_PLACED = "OrderPlaced"
    ORDER_CONFIRMED = "OrderConfirmed"
    ORDER_REJECTED = "OrderRejected"
    ORDER_CANCELLED = "OrderCancelled"
    PAYMENT_CAPTURED = "PaymentCaptured"
    PAYMENT_DECLINED = "PaymentDeclined"
    PAYMENT_REFUNDED = "PaymentRefunded"

    @property
    def source(self) -> str:
        """The service that publishes this type (the middle part of its subject)."""
        return _SOURCES[self]


_SOURCES = {
    EventType.USER_REGISTERED: "users",
    EventType.ORDER_PLACED: "orders",
    EventType.ORDER_CONFIRMED: "orders",
    EventType.ORDER_REJECTED: "orders",
    EventType.ORDER_CANCELLED: "orders",
    EventType.PAYMENT_CAPTURED: "payments",
    EventType.PAYMENT_DECLINED: "payments",
    EventType.PAYMENT_REFUNDED: "payments",
}

# --- limits both ends of a call must agree on -----------------------------------------------------

# The largest charge payments accepts (the card processor's cap), in minor units: inventory keeps
# every unit price at or below it and orders refuses at creation an order whose total exceeds it,
# so no order can exist that payments would refuse to charge.
MAX_CHARGE_CENTS = 99_999_999
# The currencies payments charges in (ISO 4217, upper case): the only ones a product may be priced in.
CURRENCIES: frozenset[str] = frozenset({"USD"})

# --- problem types (contracts/problems.json) --------------------------------------------------

# inventory -> orders
OUT_OF_STOCK = ProblemType("out-of-stock", 409, "Out of stock")
UNKNOWN_SKU = ProblemType("unknown-sku", 422, "Unknown product")
RESERVATION_CLOSED = ProblemType("reservation-closed", 409, "Reservation closed")
RESERVATION_MISMATCH = ProblemType("reservation-mismatch", 409, "Reservation mismatch")
RESERVATION_COMMITTED = ProblemType("reservation-committed", 409, "Reservation committed")
RESERVATION_NOT_COMMITTED = ProblemType("reservation-not-committed", 409, "Reservation not committed")
# payments -> orders
INVALID_CARD = ProblemType("invalid-card", 422, "Card not valid")
PAYMENT_DECLINED = ProblemType("payment-declined", 402, "Payment declined")
PAYMENT_VOIDED = ProblemType("payment-voided", 409, "Payment voided")
PAYMENT_NOT_CAPTURED = ProblemType("payment-not-captured", 409, "Payment not captured")
PAYMENT_NOT_FOUND = ProblemType("payment-not-found", 404, "No payment")
PAYMENT_VELOCITY = ProblemType("payment-velocity", 429, "Too many payment attempts")

PROBLEM_TYPES: tuple[ProblemType, ...] = (
    OUT_OF_STOCK, UNKNOWN_SKU, RESERVATION_CLOSED, RESERVATION_MISMATCH, RESERVATION_COMMITTED,
    RESERVATION_NOT_COMMITTED,
    INVALID_CARD, PAYMENT_DECLINED, PAYMENT_VOIDED, PAYMENT_NOT_CAPTURED, PAYMENT_NOT_FOUND, PAYMENT_VELOCITY,
)
