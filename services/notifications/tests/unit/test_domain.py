import pytest
from microshop_notifications.domain import (
    InvalidEvent,
    LineItem,
    NotificationType,
    check_address,
    format_money,
    order_mail,
    retry_delay,
    welcome,
)


@pytest.mark.parametrize(
    ("cents", "text"),
    [(0, "0.00 USD"), (5, "0.05 USD"), (1250, "12.50 USD"), (123456789, "1,234,567.89 USD"), (-250, "-2.50 USD")],
)
def test_money_is_formatted_from_integer_cents(cents, text):
    assert format_money(cents, "USD") == text


def test_retry_delay_doubles_up_to_the_cap_and_never_overflows():
    delays = [retry_delay(n, base=1.0, cap=300.0) for n in range(1, 12)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert delays[-1] == 300.0 and delays == sorted(delays)
    assert retry_delay(100_000, base=1.0, cap=300.0) == 300.0


def test_welcome_keeps_a_name_with_line_breaks_on_one_header_line():
    draft = welcome(user_id="u-1", email="ada@example.com", name="Ada\r\nBcc: victim@example.com")
    assert draft.subject == "Welcome to microshop, Ada Bcc: victim@example.com"
    assert "\n" not in draft.subject and draft.type is NotificationType.WELCOME and draft.order_id is None


def test_order_mail_lists_each_line_and_the_total():
    draft = order_mail(
        NotificationType.ORDER_CONFIRMED, order_id="1a2b3c4d-0000-4000-8000-000000000000", customer_id="c-1",
        email="c@example.com", items=[LineItem("BOOK-1", 3, 999)], total_cents=2997, currency="USD",
        payment_id="pay-9",
    )
    assert draft.subject == "Order 1a2b3c4d confirmed"
    assert "  3 x BOOK-1 at 9.99 USD = 29.97 USD\n" in draft.body
    assert "Total: 29.97 USD" in draft.body and "pay-9" in draft.body
    assert (draft.user_id, draft.recipient) == ("c-1", "c@example.com")


def test_a_rejection_without_a_reason_still_reads_well():
    draft = order_mail(
        NotificationType.ORDER_REJECTED, order_id="ord-12345678", customer_id="c-1", email="c@example.com",
        items=[LineItem("A", 1, 100)], total_cents=100, currency="USD",
    )
    assert draft.subject == "Order ord-1234 could not be completed"
    assert "could not be completed.\n" in draft.body and "Nothing has been charged." in draft.body


def test_welcome_is_not_an_order_mail():
    with pytest.raises(ValueError):
        order_mail(NotificationType.WELCOME, order_id="o", customer_id="c", email="c@example.com",
                   items=[], total_cents=0, currency="USD")


@pytest.mark.parametrize("address", ["", "ada", "@example.com", "ada@", "ada @example.com", "a@b.c\nBcc: x@y.z",
                                     "Ada <ada@example.com>"])
def test_implausible_addresses_are_refused(address):
    with pytest.raises(InvalidEvent):
        check_address(address)


@pytest.mark.parametrize("address", ["ada@example.com", "admin@microshop.local", "zoë@exämple.com"])
def test_plausible_addresses_pass(address):
    assert check_address(address) == address
