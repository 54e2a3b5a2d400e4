"""Rules about payments and the ledger, free of frameworks and storage.

A payment's life, as the table of transitions below::

    (none) --intent--> PENDING --capture--> CAPTURED --refund--> REFUNDED
      |                   |----decline--> DECLINED
      |                   '----void-----> VOIDED     (the processor made no charge)
      '------tombstone------------------> VOIDED     (a refund before any charge)

A row never goes back and is never deleted. Each move is written guarded by its source status
(an insert, decided by the unique order id, when there is no payment yet), so of two racing moves
exactly one lands and the other acts on what it wrote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from microshop_chassis.contracts import MAX_CHARGE_CENTS, EventType


class PaymentStatus(StrEnum):
    """PENDING -> CAPTURED | DECLINED | VOIDED; CAPTURED -> REFUNDED. Only PENDING is not final."""

    PENDING = "PENDING"  # the intent: recorded before the processor is called, outcome not known yet
    CAPTURED = "CAPTURED"
    DECLINED = "DECLINED"
    REFUNDED = "REFUNDED"
    VOIDED = "VOIDED"  # refunded before any capture was recorded: no charge may be kept for the order


class LedgerKind(StrEnum):
    CAPTURE = "CAPTURE"
    REFUND = "REFUND"


@dataclass(frozen=True)
class Transition:
    """One move of a payment: from ``source`` (None: the order has no payment yet) to ``target``,
    with the ledger entry it writes and the event it publishes, if any."""

    name: str
    source: PaymentStatus | None
    target: PaymentStatus
    ledger: LedgerKind | None = None
    event: EventType | None = None


S = PaymentStatus

INTENT = Transition("intent", None, S.PENDING)
CAPTURE = Transition("capture", S.PENDING, S.CAPTURED, LedgerKind.CAPTURE, EventType.PAYMENT_CAPTURED)
DECLINE = Transition("decline", S.PENDING, S.DECLINED, event=EventType.PAYMENT_DECLINED)
# Asked about a PENDING payment, the processor had made no charge: nothing moved, nothing to tell.
VOID = Transition("void", S.PENDING, S.VOIDED)
REFUND = Transition("refund", S.CAPTURED, S.REFUNDED, LedgerKind.REFUND, EventType.PAYMENT_REFUNDED)
TOMBSTONE = Transition("tombstone", None, S.VOIDED)

TRANSITIONS: tuple[Transition, ...] = (INTENT, CAPTURE, DECLINE, VOID, REFUND, TOMBSTONE)

def charge_outcome(approved: bool) -> Transition:
    """The move that records what the processor did with a PENDING payment's charge."""
    return CAPTURE if approved else DECLINE


CURRENCY = "USD"  # one currency system-wide, so ledger sums are meaningful (contracts.CURRENCIES)
MAX_AMOUNT_CENTS = MAX_CHARGE_CENTS  # the card processor's cap, shared with inventory and orders


# --- velocity: card testing --------------------------------------------------------------------

# The decline code of a charge payments refused itself (velocity limits), without the processor.
VELOCITY_DECLINE_CODE = "velocity"
# What a customer is told of any decline (the processor's code is for admins only).
GENERIC_DECLINE_CODE = "declined"


@dataclass(frozen=True)
class VelocityLimit:
    """At most ``limit`` different cards in the last ``window``: a card is counted at the last
    time it was used (or declined)."""

    limit: int
    window: timedelta

    def wait(self, last_times: list[datetime], now: datetime) -> float | None:
        """Seconds until fewer than ``limit`` cards are counted, given each counted card's last
        time; None when fewer already are."""
        recent = sorted((t for t in last_times if t > now - self.window), reverse=True)
        if len(recent) < self.limit:
            return None
        # The limit-th most recent card leaves the window last among those that must leave.
        return max(1.0, (recent[self.limit - 1] + self.window - now).total_seconds())


def ledger_amount(kind: LedgerKind, amount_cents: int) -> int:
    """A capture adds money, a refund takes it back: refund entries are negative."""
    return amount_cents if kind is LedgerKind.CAPTURE else -amount_cents


def same_charge(payment_amount_cents: int, payment_currency: str, amount_cents: int, currency: str) -> bool:
    """Whether a repeated charge request for an order asks for what the recorded payment holds."""
    return payment_amount_cents == amount_cents and payment_currency == currency


def charge_description(order_id: str) -> str:
    """Sent with every charge: ties the processor's charge (and its key) to one order."""
    return f"order {order_id}"


def refund_key(order_id: str) -> str:
    """One refund per order: every attempt uses this key, so the processor refunds at most once."""
    return f"refund-{order_id}"


def void_key(charge_id: str) -> str:
    """Key for giving back a charge that completed after its order's payment was VOIDED."""
    return f"void-{charge_id}"


def may_view(customer_id: str, principal_id: str, role: str) -> bool:
    """The paying customer, an admin and other microshop services may see a payment."""
    return role in ("admin", "service") or principal_id == customer_id


@dataclass(frozen=True)
class LedgerTotals:
    """Money that moved (``refunded_cents`` positive), and how many payments are in each status."""

    captured_cents: int
    refunded_cents: int
    captures: int
    refunds: int
    payments_by_status: dict[str, int]

    @property
    def net_cents(self) -> int:
        return self.captured_cents - self.refunded_cents


# --- what payments refuses, in the domain's terms (api.py answers each with its problem type) ----
# Public attributes are the problem's extension members: set only what belongs in the answer.


class PaymentError(Exception):
    """A request payments refuses."""


class InvalidCard(PaymentError):
    """The processor refused to tokenize the card; ``code`` is its reason."""

    def __init__(self, detail: str, code: str | None) -> None:
        super().__init__(detail)
        self.code = code


class UnknownCardToken(PaymentError):
    def __init__(self) -> None:
        super().__init__("The card token is unknown to the card processor.")


class IdempotencyKeyReused(PaymentError):
    """The processor already made a different charge under the payment's key."""

    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was already used for a different charge.")


class CardDeclined(PaymentError):
    def __init__(self, *, decline_code: str | None, payment_id: str, order_id: str) -> None:
        super().__init__(f"The card was declined ({decline_code}).")
        self.decline_code = decline_code
        self.payment_id = payment_id
        self.order_id = order_id


class VelocityLimited(PaymentError):
    """Too many different cards from one customer lately (card testing): refused before the
    processor is called, for ``retry_after_seconds``."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("Too many payment attempts with different cards; try again later.")
        self.retry_after_seconds = math.ceil(retry_after)


class PaymentMismatch(PaymentError):
    """Another amount or currency is recorded for the order."""

    def __init__(self, *, order_id: str, amount_cents: int, currency: str, payment_id: str) -> None:
        super().__init__(f"Order {order_id} already has a payment of {amount_cents} {currency}.")
        self.payment_id = payment_id


class PaymentVoided(PaymentError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"The payment for order {order_id} was voided (refunded before it was charged); "
                         "the order cannot be charged.")


class PaymentNotCaptured(PaymentError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"The payment for order {order_id} was declined; nothing to refund.")


class PaymentNotFound(PaymentError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"No payment for order {order_id}.")
