from microshop_payments.domain import LedgerKind, ledger_amount, may_view, refund_key, same_charge, void_key


def test_refunds_enter_the_ledger_negative():
    assert ledger_amount(LedgerKind.CAPTURE, 1999) == 1999
    assert ledger_amount(LedgerKind.REFUND, 1999) == -1999


def test_a_repeat_must_ask_for_the_recorded_amount_and_currency():
    assert same_charge(1000, "USD", 1000, "USD")
    assert not same_charge(1000, "USD", 1001, "USD")
    assert not same_charge(1000, "USD", 1000, "EUR")


def test_only_the_customer_admins_and_services_may_view():
    assert may_view("cust-1", "cust-1", "customer")
    assert not may_view("cust-1", "cust-2", "customer")
    assert may_view("cust-1", "admin-1", "admin")
    assert may_view("cust-1", "service:orders", "service")


def test_refund_and_void_keys_are_stable_and_distinct():
    assert refund_key("o-1") == refund_key("o-1") != refund_key("o-2")
    assert void_key("ch_1") != refund_key("ch_1")


def test_a_velocity_limit_waits_until_fewer_cards_than_the_limit_are_in_the_window():
    from datetime import UTC, datetime, timedelta

    from microshop_payments.domain import VelocityLimit

    now = datetime(2030, 1, 1, 12, tzinfo=UTC)
    limit = VelocityLimit(3, timedelta(hours=1))
    minutes_ago = lambda *ms: [now - timedelta(minutes=m) for m in ms]  # noqa: E731
    assert limit.wait(minutes_ago(1, 2), now) is None
    assert limit.wait(minutes_ago(1, 2, 90), now) is None  # one is out of the window already
    # Three in the window: the count drops below 3 once the third most recent leaves it.
    assert limit.wait(minutes_ago(50, 10, 40), now) == 10 * 60
    assert limit.wait(minutes_ago(30, 10, 40, 55), now) == 20 * 60  # once 40 and 55 left it
