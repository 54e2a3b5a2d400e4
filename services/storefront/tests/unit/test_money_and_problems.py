"""Money as the pages show it, and upstream problem+json bodies as the customer reads them."""

import pytest

from microshop_storefront.money import format_money
from microshop_storefront.shop import (
    KeyReused,
    NotFound,
    SessionExpired,
    ShopError,
    Unavailable,
    problem_error,
)

BASE = "https://microshop.dev/problems/"


@pytest.mark.parametrize(("minor", "currency", "text"), [
    (1450, "USD", "$14.50"), (5, "USD", "$0.05"), (0, "USD", "$0.00"), (123456789, "USD", "$1,234,567.89"),
    (-250, "USD", "-$2.50"), (1000, "EUR", "€10.00"), (500, "JPY", "500 JPY"), (1234, "CHF", "12.34 CHF"),
])
def test_minor_units_are_formatted_without_floats(minor, currency, text):
    assert format_money(minor, currency) == text


def problem(slug: str, status: int, **members) -> dict:
    return {"type": BASE + slug, "title": slug, "status": status, "detail": "internal detail", **members}


def test_an_unavailable_service_behind_the_gateway_says_which_part_of_the_shop_and_to_try_again():
    error = problem_error("orders", 503, problem("upstream-unavailable", 503))
    assert isinstance(error, Unavailable)
    assert str(error) == "Ordering is unavailable right now. Please try again in a moment."
    checkout = problem_error("orders", 503, problem("checkout-unavailable", 503))
    assert isinstance(checkout, Unavailable) and "nothing was charged" in str(checkout)


def test_known_problems_become_friendly_sentences_with_their_members():
    assert "no longer sold (A, B)" in str(problem_error("orders", 422, problem("unknown-sku", 422, skus=["A", "B"])))
    limited = problem_error("orders", 429, problem("too-many-payment-attempts", 429, retry_after_seconds=30))
    assert "in 30 seconds" in str(limited)
    assert "(this one is REJECTED)" in str(problem_error("orders", 409, problem("order-not-cancellable", 409,
                                                                               order_status="REJECTED")))
    assert isinstance(problem_error("orders", 422, problem("idempotency-key-reused", 422)), KeyReused)
    assert isinstance(problem_error("orders", 404, problem("order-not-found", 404)), NotFound)
    assert isinstance(problem_error("orders", 401, problem("unauthorized", 401)), SessionExpired)


def test_a_missing_member_never_shows_a_placeholder():
    text = str(problem_error("orders", 422, problem("unknown-sku", 422)))
    assert "{" not in text and text


def test_validation_errors_name_the_form_fields():
    body = problem("validation-error", 422, errors=[
        {"loc": ["body", "payment", "card_number"], "msg": "String should have at least 12 characters",
         "type": "string_too_short"},
        {"loc": ["body", "payment", "cvc"], "msg": "Value error, bad", "type": "value_error"}])
    error = problem_error("orders", 422, body)
    assert error.fields == {"card_number": "String should have at least 12 characters", "cvc": "Bad"}


def test_a_weak_password_says_what_users_said_and_marks_the_field():
    error = problem_error("users", 422, problem("weak-password", 422, detail="Add another word or two."))
    assert str(error) == "Add another word or two." and error.fields == {"password": "Add another word or two."}


@pytest.mark.parametrize(("status", "kind"), [(500, Unavailable), (502, Unavailable), (404, NotFound),
                                              (401, SessionExpired), (418, ShopError)])
def test_anything_unknown_is_judged_by_its_status_and_never_shows_its_detail(status, kind):
    error = problem_error("inventory", status, "<html>Traceback (most recent call last)</html>")
    assert type(error) is kind
    assert "Traceback" not in str(error) and "internal" not in str(error)
