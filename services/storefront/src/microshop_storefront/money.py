"""Money as the shop shows it. Amounts are integer minor units everywhere (cents); only this turns
one into text, and never through a float."""

from __future__ import annotations

SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}
# ISO 4217 minor-unit exponents that are not 2.
EXPONENTS = {"JPY": 0, "KRW": 0, "BHD": 3, "KWD": 3}


def format_money(minor_units: int, currency: str = "USD") -> str:
    """``1450, "USD"`` -> ``$14.50``; ``123456789, "USD"`` -> ``$1,234,567.89``; ``-250`` -> ``-$2.50``."""
    exponent = EXPONENTS.get(currency, 2)
    sign = "-" if minor_units < 0 else ""
    units, minor = divmod(abs(int(minor_units)), 10**exponent)
    text = f"{units:,}" + (f".{minor:0{exponent}d}" if exponent else "")
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {currency}"


def line_total(unit_minor_units: int, quantity: int) -> int:
    return unit_minor_units * quantity
