"""Rules about accounts, free of frameworks and storage, and what can go wrong in their terms
(api.py answers each error with its problem type)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    CUSTOMER = "customer"
    ADMIN = "admin"


MIN_PASSWORD_LENGTH = 8


def normalize_email(email: str) -> str:
    """E-mail addresses are unique case-insensitively; we store them lower-cased and trimmed."""
    return email.strip().lower()


@dataclass(frozen=True)
class Account:
    """An account as the use cases hand it out: never with its password hash."""

    id: str
    email: str
    name: str
    role: Role


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int  # seconds


class UsersError(Exception):
    """A request users refuses; nothing was changed."""


class EmailTaken(UsersError):
    def __init__(self, email: str) -> None:
        super().__init__(f"An account with e-mail {email} already exists.")


class InvalidCredentials(UsersError):
    """Wrong e-mail or wrong password: the answer never says which."""

    def __init__(self) -> None:
        super().__init__("E-mail or password is wrong.")


class UnknownServiceCredentials(UsersError):
    def __init__(self) -> None:
        super().__init__("Unknown service credentials.")


class AccountNotFound(UsersError):
    """The account behind a still-valid token is gone."""

    def __init__(self) -> None:
        super().__init__("This account no longer exists.")
