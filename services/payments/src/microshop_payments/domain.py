"""Rules about payments and the ledger, free of frameworks and storage."""

from __future__ import annotations

from enum import StrEnum


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


CURRENCY = "USD"  # one currency system-wide, so ledger sums are meaningful
MAX_AMOUNT_CENTS = 99_999_999  # the card processor's cap


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
