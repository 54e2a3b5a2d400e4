"""A payment's life as domain.py declares it, and the store writing each move only from its source."""

import pytest
from microshop_chassis.contracts import EventType
from microshop_payments.domain import (
    CAPTURE,
    DECLINE,
    INTENT,
    REFUND,
    TOMBSTONE,
    TRANSITIONS,
    VOID,
    LedgerKind,
    PaymentStatus,
    charge_outcome,
)
from microshop_payments.events import EVENTS

S = PaymentStatus
MOVES = {(t.source, t.target) for t in TRANSITIONS}
FINAL_STATUSES = set(S) - {S.PENDING}  # the charge's outcome is known (PaymentStatus' docstring)


def test_each_move_names_its_source_target_ledger_entry_and_event():
    assert {t.name: (t.source, t.target, t.ledger, t.event) for t in TRANSITIONS} == {
        "intent": (None, S.PENDING, None, None),
        "capture": (S.PENDING, S.CAPTURED, LedgerKind.CAPTURE, EventType.PAYMENT_CAPTURED),
        "decline": (S.PENDING, S.DECLINED, None, EventType.PAYMENT_DECLINED),
        "void": (S.PENDING, S.VOIDED, None, None),
        "refund": (S.CAPTURED, S.REFUNDED, LedgerKind.REFUND, EventType.PAYMENT_REFUNDED),
        "tombstone": (None, S.VOIDED, None, None),
    }


def test_only_the_declared_moves_are_allowed():
    assert MOVES == {(None, S.PENDING), (None, S.VOIDED), (S.PENDING, S.CAPTURED), (S.PENDING, S.DECLINED),
                       (S.PENDING, S.VOIDED), (S.CAPTURED, S.REFUNDED)}
    assert not any((status, S.PENDING) in MOVES for status in S)  # nothing goes back to PENDING


def test_only_pending_is_not_final_and_of_the_final_statuses_only_captured_moves_on():
    assert [t.name for t in TRANSITIONS if t.source in FINAL_STATUSES] == ["refund"]
    assert {status for status in S if not any(t.source == status for t in TRANSITIONS)} == {
        S.DECLINED, S.REFUNDED, S.VOIDED}  # no move leaves these


def test_the_processors_answer_picks_capture_or_decline():
    assert charge_outcome(approved=True) is CAPTURE
    assert charge_outcome(approved=False) is DECLINE


def test_only_moves_of_money_write_the_ledger_and_every_payment_event_has_its_move():
    assert {t.ledger for t in TRANSITIONS if t.ledger} == set(LedgerKind)
    assert [t.event for t in TRANSITIONS if t.event] == [EventType.PAYMENT_CAPTURED, EventType.PAYMENT_DECLINED,
                                                         EventType.PAYMENT_REFUNDED]
    assert {t.event for t in TRANSITIONS if t.event} == set(EVENTS)


async def test_the_store_writes_a_move_only_from_its_source_status(world):
    store = world.payments.store
    payment = await store.create(INTENT, order_id="o-1", customer_id="c-1", amount_cents=500, currency="USD",
                                 idempotency_key="k")
    assert payment is not None and payment.status == S.PENDING
    assert await store.create(TOMBSTONE, order_id="o-1", customer_id="", amount_cents=0, currency="USD",
                              idempotency_key=None) is None  # the order has its payment
    assert not await store.move(payment, REFUND)  # not CAPTURED
    with pytest.raises(ValueError, match="not columns of payments: charge_id"):
        await store.move(payment, CAPTURE, charge_id="ch_1")  # a misnamed change is refused, not dropped
    assert payment.status == S.PENDING
    assert await store.move(payment, CAPTURE, processor_charge_id="ch_1")
    assert not await store.move(payment, VOID)  # a racer's move from PENDING now misses
    assert not await store.move(payment, CAPTURE)  # and so does a repeat: one ledger entry, one event
    assert (await store.find("o-1")).status == S.CAPTURED
    totals = await store.ledger_totals()
    assert (totals.captures, totals.captured_cents) == (1, 500)
    assert await world.event_types() == [EventType.PAYMENT_CAPTURED]
