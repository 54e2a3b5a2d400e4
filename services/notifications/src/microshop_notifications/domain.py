"""What we tell people and how: mail kinds, their wording, money formatting, retry timing, and
what can go wrong, in the domain's terms.

Free of frameworks, storage and SMTP.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from microshop_chassis.contracts import EventType


class NotificationType(StrEnum):
    WELCOME = "welcome"
    ORDER_CONFIRMED = "order_confirmed"
    ORDER_REJECTED = "order_rejected"
    ORDER_CANCELLED = "order_cancelled"


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"


# The events we turn into mail (and subscribe to), and the kind of mail each becomes.
TYPE_FOR_EVENT: dict[EventType, NotificationType] = {
    EventType.USER_REGISTERED: NotificationType.WELCOME,
    EventType.ORDER_CONFIRMED: NotificationType.ORDER_CONFIRMED,
    EventType.ORDER_REJECTED: NotificationType.ORDER_REJECTED,
    EventType.ORDER_CANCELLED: NotificationType.ORDER_CANCELLED,
}
EVENT_FOR_TYPE: dict[NotificationType, EventType] = {kind: event for event, kind in TYPE_FOR_EVENT.items()}


@dataclass(frozen=True)
class LineItem:
    sku: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True)
class Draft:
    """A notification ready to be stored, before it has an id."""

    type: NotificationType
    user_id: str
    order_id: str | None
    recipient: str
    subject: str
    body: str


def format_money(cents: int, currency: str) -> str:
    """Integer minor units to text: 123456, "USD" -> "1,234.56 USD"."""
    sign = "-" if cents < 0 else ""
    units, rest = divmod(abs(cents), 100)
    return f"{sign}{units:,}.{rest:02d} {currency}"


def short_order_id(order_id: str) -> str:
    """The first 8 characters of a (UUID) order id: enough for a human to recognise it."""
    return order_id[:8]


# Unicode categories never shown as text: Cc controls (NUL, ESC, DEL, C1), Cf format characters
# (U+202E RIGHT-TO-LEFT OVERRIDE, zero-width spaces) and Cs lone surrogates (not encodable).
_UNSAFE_IN_HEADERS = frozenset({"Cc", "Cf", "Cs"})


def one_line(text: str) -> str:
    """Text fit for a mail header: control characters (NUL, ESC, DEL, C1...) and invisible
    format characters (bidi overrides that reorder what a reader sees) become spaces, and runs of
    whitespace, newlines included, one space: a header value must never span lines."""
    visible = "".join(" " if unicodedata.category(ch) in _UNSAFE_IN_HEADERS else ch for ch in text)
    return " ".join(visible.split())


def check_address(address: str) -> str:
    """A plausible e-mail address, or InvalidEvent: an SMTP server would refuse it forever."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or len(address) > 320:
        raise InvalidEvent(f"not an e-mail address: {address!r}")
    if any(ch.isspace() or ord(ch) < 32 or ch in "<>," for ch in address):
        raise InvalidEvent(f"not an e-mail address: {address!r}")
    return address


def welcome(*, user_id: str, email: str, name: str) -> Draft:
    name = one_line(name) or "there"
    body = (
        f"Hello {name},\n\n"
        f"welcome to microshop! Your account {email} is ready.\n\n"
        "Happy shopping,\nmicroshop\n"
    )
    return Draft(NotificationType.WELCOME, user_id, None, check_address(email),
                 f"Welcome to microshop, {name}", body)


def order_mail(
    kind: NotificationType,
    *,
    order_id: str,
    customer_id: str,
    email: str,
    items: Sequence[LineItem],
    total_cents: int,
    currency: str,
    payment_id: str | None = None,
    reason: str | None = None,
) -> Draft:
    """The mail for an order that reached an end state: confirmed, rejected or cancelled."""
    short = short_order_id(order_id)
    total = format_money(total_cents, currency)
    if kind is NotificationType.ORDER_CONFIRMED:
        subject = f"Order {short} confirmed"
        opening = f"thank you! Your order {order_id} is confirmed and paid."
        closing = f"Payment reference: {payment_id}\n" if payment_id else ""
    elif kind is NotificationType.ORDER_REJECTED:
        subject = f"Order {short} could not be completed"
        because = f": {one_line(reason)}" if reason and reason.strip() else "."
        opening = f"we are sorry: your order {order_id} could not be completed{because}"
        closing = "Nothing has been charged.\n"
    elif kind is NotificationType.ORDER_CANCELLED:
        subject = f"Order {short} cancelled"
        opening = f"your order {order_id} has been cancelled."
        closing = f"The payment of {total} will be refunded.\n"
    else:
        raise ValueError(f"{kind} is not an order notification")
    lines = "\n".join(
        f"  {item.quantity} x {item.sku} at {format_money(item.unit_price_cents, currency)}"
        f" = {format_money(item.quantity * item.unit_price_cents, currency)}"
        for item in items
    )
    body = f"Hello,\n\n{opening}\n\n{lines}\n\nTotal: {total}\n{closing}\nmicroshop\n"
    return Draft(kind, customer_id, order_id, check_address(email), one_line(subject), body)


def retry_delay(attempts: int, *, base: float, cap: float) -> float:
    """Capped exponential backoff after the ``attempts``-th failed delivery (1, 2, 3...)."""
    # The exponent is bounded: a message retried for days must not overflow a float.
    return min(cap, base * 2 ** min(max(0, attempts - 1), 32))


# --- what can go wrong, in the domain's terms ----------------------------------------------------


class InvalidEvent(ValueError):
    """The event breaks its contract: retrying cannot help, so it goes to the dead-letter stream."""


class NotificationNotFound(LookupError):
    """No such notification, or not the viewer's: the two are answered alike, so ids are not
    disclosed (api.py answers it with its problem type)."""

    def __init__(self, notification_id: str) -> None:
        super().__init__(f"No notification {notification_id}.")


class MessageRefused(Exception):
    """The mail server refused this one message (a recipient, its size...) or it could not be
    sent as built; the connection is still good for the next one. It is retried later."""
