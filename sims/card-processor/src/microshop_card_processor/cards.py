"""Card validation, brand detection and the test-card table.

Nothing here logs or echoes a card number: error details only say *what* is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# Test cards with a fixed outcome at charge time. Any other valid number is approved.
DECLINES: dict[str, str] = {
    "4000000000000002": "card_declined",
    "4000000000009995": "insufficient_funds",
}

_DIGITS = re.compile(r"[0-9]+")


class CardError(ValueError):
    """A card field is invalid; ``code`` is the machine-readable problem code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Card:
    number: str
    exp_month: int
    exp_year: int
    brand: str
    last4: str


def luhn_valid(number: str) -> bool:
    """Luhn mod-10 check over a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def brand_of(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if number[:2] in {"34", "37"}:
        return "amex"
    if 51 <= int(number[:2]) <= 55 or 2221 <= int(number[:4]) <= 2720:
        return "mastercard"
    return "unknown"


def _is_int(value: Any) -> bool:
    # bool is a subclass of int; ``true`` is not a month.
    return isinstance(value, int) and not isinstance(value, bool)


def validate_card(body: dict[str, Any], now: datetime | None = None) -> Card:
    """Validate a tokenization request body; raise CardError on the first problem found."""
    number = body.get("number")
    if not isinstance(number, str):
        raise CardError("invalid_number", "number must be a string of digits")
    number = number.replace(" ", "")
    if not _DIGITS.fullmatch(number):
        raise CardError("invalid_number", "number must contain only digits (spaces allowed)")
    if not 12 <= len(number) <= 19:
        raise CardError("invalid_number", "number must be 12 to 19 digits long")
    if not luhn_valid(number):
        raise CardError("invalid_number", "number fails the Luhn check")

    month, year = body.get("exp_month"), body.get("exp_year")
    if not _is_int(month) or not 1 <= month <= 12:
        raise CardError("invalid_expiry", "exp_month must be an integer 1..12")
    if not _is_int(year) or not 1000 <= year <= 9999:
        raise CardError("invalid_expiry", "exp_year must be a four-digit integer")
    now = now or datetime.now(UTC)
    # A card is valid through the last day of its expiry month.
    if (year, month) < (now.year, now.month):
        raise CardError("expired_card", "the card has expired")

    cvc = body.get("cvc")
    if not isinstance(cvc, str) or not _DIGITS.fullmatch(cvc) or len(cvc) not in (3, 4):
        raise CardError("invalid_cvc", "cvc must be a string of 3 or 4 digits")

    return Card(number=number, exp_month=month, exp_year=year, brand=brand_of(number), last4=number[-4:])
