import pytest
from microshop_orders.domain import (
    OrderStatus,
    Step,
    StepResult,
    UnchargeableOrder,
    can_cancel,
    chargeable_total,
    deadline_transition,
    give_up_transition,
    next_transition,
    order_total,
)

OK = StepResult(ok=True)
REFUSED = StepResult(ok=False, reason="no")


def test_happy_path_ends_confirmed_with_its_event():
    step, status = Step.RESERVE_STOCK, OrderStatus.PENDING
    events = []
    while step is not Step.DONE:
        transition = next_transition(step, OK)
        step, status = transition.step, transition.status
        events.append(transition.event)
    assert status is OrderStatus.CONFIRMED
    assert [e for e in events if e] == ["OrderConfirmed"]


def test_out_of_stock_rejects_at_once_with_nothing_to_compensate():
    transition = next_transition(Step.RESERVE_STOCK, REFUSED)
    assert (transition.step, transition.status, transition.event) == (Step.DONE, OrderStatus.REJECTED, "OrderRejected")


def test_declined_card_releases_stock_then_rejects():
    release = next_transition(Step.CHARGE_PAYMENT, REFUSED)
    assert release.step is Step.RELEASE_STOCK and release.status is OrderStatus.PENDING
    done = next_transition(release.step, OK)
    assert (done.step, done.status) == (Step.DONE, OrderStatus.REJECTED)


def test_expired_reservation_after_charge_refunds_then_releases():
    refund = next_transition(Step.COMMIT_STOCK, REFUSED)
    assert refund.step is Step.REFUND_PAYMENT
    assert next_transition(refund.step, OK).step is Step.RELEASE_STOCK


def test_cancel_refunds_then_restocks_then_cancels():
    restock = next_transition(Step.CANCEL_REFUND, OK)
    assert restock.step is Step.CANCEL_RESTOCK and restock.status is OrderStatus.CONFIRMED
    done = next_transition(restock.step, OK)
    assert (done.status, done.event) == (OrderStatus.CANCELLED, "OrderCancelled")


@pytest.mark.parametrize("step", [Step.RELEASE_STOCK, Step.REFUND_PAYMENT, Step.CANCEL_REFUND, Step.CANCEL_RESTOCK])
def test_compensations_cannot_be_refused(step):
    with pytest.raises(ValueError):
        next_transition(step, REFUSED)


def test_only_confirmed_orders_can_be_cancelled():
    assert can_cancel(OrderStatus.CONFIRMED, Step.DONE)
    assert can_cancel(OrderStatus.CONFIRMED, Step.CANCEL_RESTOCK)  # a cancellation under way goes on
    assert not can_cancel(OrderStatus.PENDING, Step.CHARGE_PAYMENT)
    assert not can_cancel(OrderStatus.REJECTED, Step.DONE)
    assert not can_cancel(OrderStatus.CANCELLED, Step.DONE)


def test_total_is_integer_minor_units():
    assert order_total([(3, 1999), (1, 1)]) == 5998


def test_past_the_deadline_only_steps_before_the_charge_are_given_up():
    assert deadline_transition(Step.RESERVE_STOCK).step is Step.RELEASE_STOCK
    assert deadline_transition(Step.CHARGE_PAYMENT).step is Step.REFUND_PAYMENT
    # After the pivot (money taken) and during compensations, the saga only goes forward.
    for step in (Step.COMMIT_STOCK, Step.REFUND_PAYMENT, Step.RELEASE_STOCK, Step.CANCEL_REFUND,
                 Step.CANCEL_RESTOCK, Step.DONE):
        assert deadline_transition(step) is None
    # A given-up charge ends REJECTED once the void and the release are done.
    step = deadline_transition(Step.CHARGE_PAYMENT).step
    while step is not Step.DONE:
        transition = next_transition(step, OK)
        step, status = transition.step, transition.status
    assert status is OrderStatus.REJECTED


def test_a_step_refused_for_good_is_compensated_and_a_compensation_stops_for_an_operator():
    assert give_up_transition(Step.RESERVE_STOCK).step is Step.RELEASE_STOCK
    assert give_up_transition(Step.CHARGE_PAYMENT).step is Step.REFUND_PAYMENT
    assert give_up_transition(Step.COMMIT_STOCK).step is Step.REFUND_PAYMENT  # money back after the pivot
    for step in (Step.RELEASE_STOCK, Step.REFUND_PAYMENT, Step.CANCEL_REFUND, Step.CANCEL_RESTOCK):
        stopped = give_up_transition(step)
        assert (stopped.step, stopped.status, stopped.event) == (Step.DONE, OrderStatus.NEEDS_ATTENTION, None)
    stuck = next_transition(Step.RELEASE_STOCK, StepResult(ok=False, stuck=True, reason="sold"))
    assert stuck.status is OrderStatus.NEEDS_ATTENTION


def test_only_a_total_payments_can_charge_makes_an_order():
    from microshop_chassis.contracts import MAX_CHARGE_CENTS

    assert chargeable_total(MAX_CHARGE_CENTS, "USD") == MAX_CHARGE_CENTS
    for total, currency in ((0, "USD"), (MAX_CHARGE_CENTS + 1, "USD"), (100, "EUR")):
        with pytest.raises(UnchargeableOrder):
            chargeable_total(total, currency)
