"""What users accepts as a password, a name and an e-mail address."""

import asyncio

import pytest
from microshop_users.domain import HashingBusy, check_email_length, clean_name, password_weakness
from microshop_users.security import Passwords


@pytest.mark.parametrize("password", ["password", "password1", "12345678", "qwertyuiop", "xxxxxxxxxx",
                                      "iloveyou2", "Password123!", "lovelace"])
def test_common_and_trivial_passwords_are_refused(password):
    assert "too common or too simple" in password_weakness(password, email="ada@example.com", name="Ada")


@pytest.mark.parametrize(("password", "email", "name"), [
    ("adalovelace-1815", "adalovelace@example.com", "Ada"),
    ("my-name-is-ada-lovelace", "al@example.com", "Ada Lovelace"),
    ("Ada.Lovelace.1815", "al@example.com", "Ada Lovelace"),
    ("bench-password", "bench-1a2b3c@example.com", "Bench"),  # what the launcher's tools used
])
def test_passwords_made_of_the_email_or_the_name_are_refused(password, email, name):
    assert "e-mail address or your name" in password_weakness(password, email=email, name=name)


# Every password the repository's tools, tests and README use must still be accepted.
@pytest.mark.parametrize("password", ["lovelace-1815", "correct-horse", "correct-horse-1", "password-123",
                                      "whatever-123", "not-her-password", "admin-password",
                                      "sturdy-security-suite-9c2e", "orchid-lantern-7d1c9e"])
def test_the_passwords_the_repository_uses_pass(password):
    assert password_weakness(password, email="c-0123456789@example.com", name="Test Customer") is None


def test_a_long_password_is_judged_quickly_on_its_start():
    assert password_weakness("1" * 200, email="a@example.com", name="A")


@pytest.mark.parametrize(("raw", "clean"), [("  Ada ", "Ada"), ("Zoë Ørsted", "Zoë Ørsted"), ("李", "李")])
def test_names_are_trimmed(raw, clean):
    assert clean_name(raw) == clean


@pytest.mark.parametrize("name", ["   ", "\t", "\u200b", "\u00a0\u2003", "Ada\x00", "Ada\nBcc: x", "\x1b[31mAda"])
def test_blank_names_and_control_characters_are_refused(name):
    with pytest.raises(ValueError):
        clean_name(name)


def test_email_lengths_follow_rfc_5321():
    assert check_email_length("a" * 64 + "@example.com")
    with pytest.raises(ValueError, match="at most 64"):
        check_email_length("a" * 65 + "@example.com")
    with pytest.raises(ValueError, match="at most 254"):
        check_email_length("a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 60 + ".com")


async def test_hashing_refuses_at_once_beyond_its_queue():
    passwords = Passwords(slots=1, queue=2)
    hashed = await passwords.hash("correct horse")
    outcomes = await asyncio.gather(*(passwords.verify(hashed, "wrong") for _ in range(10)), return_exceptions=True)
    assert sum(isinstance(o, HashingBusy) for o in outcomes) == 7  # 1 hashing + 2 waiting were admitted
    assert sum(o is False for o in outcomes) == 3
    assert await passwords.verify(hashed, "correct horse")  # and it admits again once drained
