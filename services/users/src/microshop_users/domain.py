"""Rules about accounts, free of frameworks and storage."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    CUSTOMER = "customer"
    ADMIN = "admin"


MIN_PASSWORD_LENGTH = 8


def normalize_email(email: str) -> str:
    """E-mail addresses are unique case-insensitively; we store them lower-cased and trimmed."""
    return email.strip().lower()
