"""Rules about accounts, free of frameworks and storage, and what can go wrong in their terms
(api.py answers each error with its problem type)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from zxcvbn import zxcvbn


class Role(StrEnum):
    CUSTOMER = "customer"
    ADMIN = "admin"


MIN_PASSWORD_LENGTH = 8
# zxcvbn's score: 0 and 1 fall to an online attack (under 10^6 guesses), 2 needs 10^8 guesses,
# which login rate limits put out of reach. zxcvbn is slow on long input (tens of ms for 64
# repeated characters): it scores the first 48, where it stays under about 10 ms.
MIN_PASSWORD_SCORE = 2
_SCORED_CHARACTERS = 48
# Parts of the e-mail or name shorter than this are not looked for in the password ("Al").
_MIN_PERSONAL_PART = 3
# RFC 5321 section 4.5.3.1: a local part has at most 64 octets, a path at most 256 (so an
# address at most 254 characters once the angle brackets are counted).
MAX_EMAIL_LOCAL_PART = 64
MAX_EMAIL_LENGTH = 254


def normalize_email(email: str) -> str:
    """E-mail addresses are unique case-insensitively; we store them lower-cased and trimmed."""
    return email.strip().lower()


def has_control_characters(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


def clean_name(name: str) -> str:
    """A display name trimmed, with at least one visible character and no control characters
    (they end up in e-mail headers and logs). Raises ValueError saying what is wrong."""
    if has_control_characters(name):
        raise ValueError("must not contain control characters")
    name = name.strip()
    if not any(not char.isspace() and unicodedata.category(char) not in ("Cf", "Zs") for char in name):
        raise ValueError("must contain a visible character")
    return name


def check_email_length(email: str) -> str:
    if has_control_characters(email):
        raise ValueError("must not contain control characters")
    local, _, _ = email.rpartition("@")
    if len(local) > MAX_EMAIL_LOCAL_PART:
        raise ValueError(f"the part before @ may have at most {MAX_EMAIL_LOCAL_PART} characters (RFC 5321)")
    if len(email) > MAX_EMAIL_LENGTH:
        raise ValueError(f"may have at most {MAX_EMAIL_LENGTH} characters (RFC 5321)")
    return email


def password_weakness(password: str, *, email: str, name: str) -> str | None:
    """Why ``password`` may not be used for this account, or None: common or easily guessed
    (zxcvbn: dictionaries of leaked passwords, words, names, keyboard patterns, dates), or made of
    the account's own e-mail or name."""
    local_part = email.rpartition("@")[0]
    # Compared on letters and digits only: "Ada.Lovelace-1815" contains the name "Ada Lovelace".
    if any(len(part) >= _MIN_PERSONAL_PART and part in _letters_and_digits(password)
           for part in (_letters_and_digits(local_part), _letters_and_digits(name))):
        return "The password must not contain your e-mail address or your name."
    # The name's words alone are not refused ("Test Customer"), but zxcvbn counts them as guessable.
    user_inputs = [local_part.casefold(), *name.casefold().split()]
    verdict = zxcvbn(password[:_SCORED_CHARACTERS], user_inputs=user_inputs)
    if verdict["score"] < MIN_PASSWORD_SCORE:
        hint = verdict["feedback"].get("warning") or "It is too easy to guess."
        return f"The password is too common or too simple. {hint}".strip()
    return None


def _letters_and_digits(text: str) -> str:
    return "".join(char for char in text.casefold() if char.isalnum())


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


class WeakPassword(UsersError):
    """The password is common, trivial, or made of the account's own e-mail or name (the message
    says which)."""


class HashingBusy(UsersError):
    """Too many password hashes are waiting already: come back in a moment."""

    def __init__(self) -> None:
        super().__init__("Too many logins and registrations at once; retry in a moment.")


class AccountNotFound(UsersError):
    """The account behind a still-valid token is gone."""

    def __init__(self) -> None:
        super().__init__("This account no longer exists.")
