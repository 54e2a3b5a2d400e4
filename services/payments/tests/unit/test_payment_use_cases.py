"""payments' use cases against an in-memory card processor: charges, repeats, refunds, tombstones,
unknown outcomes settled by asking, late charges given back, and the ledger, in milliseconds."""

import pytest
from microshop_chassis.auth import Principal
from microshop_chassis.contracts import EventType
from microshop_payments.domain import (
    CardDeclined,
    IdempotencyKeyReused,
    PaymentMismatch,
    PaymentNotCaptured,
    PaymentNotFound,
    PaymentStatus,
    PaymentVoided,
    UnknownCardToken,
)
from microshop_payments.processor import ProcessorUnavailable

NO_MONEY = (0, 0, 0)


# --- charges ------------------------------------------------------------------------------------


async def test_an_approved_charge_is_captured_with_its_ledger_entry_and_event(world):
    payment = await world.charge("o-1", await world.token(), amount_cents=4999)
    assert (payment.status, payment.card_brand, payment.card_last4) == (PaymentStatus.CAPTURED, "visa", "4242")
    [charge] = world.processor.charges.values()
    assert charge.key == "order-o-1" and charge.amount_cents == 4999 and charge.description == "order o-1"
    assert payment.processor_charge_id == charge.id
    assert await world.money() == (4999, 0, 4999)
    assert await world.event_types() == [EventType.PAYMENT_CAPTURED]


async def test_a_declined_charge_is_recorded_and_refused_again_from_the_record(world, cards):
    for order_id, number, code in (("o-1", cards["declined"], "card_declined"),
                                   ("o-2", cards["no_funds"], "insufficient_funds")):
        token = await world.token(number)
        with pytest.raises(CardDeclined) as declined:
            await world.charge(order_id, token)
        assert (declined.value.decline_code, declined.value.order_id) == (code, order_id)
        assert await world.status(order_id) == PaymentStatus.DECLINED

        calls = len(world.processor.calls)
        with pytest.raises(CardDeclined) as again:
            await world.charge(order_id, token, key="another-key")
        assert again.value.payment_id == declined.value.payment_id
        assert len(world.processor.calls) == calls  # answered from the record
    assert await world.money() == NO_MONEY  # declines move no money
    assert await world.event_types() == [EventType.PAYMENT_DECLINED] * 2


async def test_a_repeat_with_any_key_answers_from_the_payment_and_charges_once(world):
    token = await world.token()
    first = await world.charge("o-1", token)
    again = await world.charge("o-1", token)
    other_key = await world.charge("o-1", token, key="a-new-key")
    assert first.id == again.id == other_key.id
    assert len(world.processor.charges) == 1 and world.processor.calls.count("charge") == 1


async def test_another_amount_for_a_charged_order_is_a_mismatch(world):
    token = await world.token()
    first = await world.charge("o-1", token, amount_cents=1000)
    with pytest.raises(PaymentMismatch) as mismatch:
        await world.charge("o-1", token, amount_cents=1001)
    assert mismatch.value.payment_id == first.id


async def test_an_unknown_token_leaves_the_intent_pending_and_a_good_token_completes_it(world):
    with pytest.raises(UnknownCardToken):
        await world.charge("o-1", "tok_never_issued")
    assert await world.status("o-1") == PaymentStatus.PENDING and world.processor.charges == {}
    fixed = await world.charge("o-1", await world.token())  # the same key
    assert fixed.status == PaymentStatus.CAPTURED


async def test_a_key_reused_for_another_order_is_refused_and_settled_without_touching_that_charge(world):
    token = await world.token()
    await world.charge("o-1", token, key="shared-key")
    with pytest.raises(IdempotencyKeyReused):
        await world.charge("o-2", token, key="shared-key")
    assert await world.status("o-2") == PaymentStatus.PENDING
    # Settling finds the key's charge, sees it is the other order's, and voids this payment.
    voided = await world.payments.refund("o-2")
    assert voided.status == PaymentStatus.VOIDED
    [charge] = world.processor.charges.values()
    assert charge.description == "order o-1" and not charge.refunded
    assert await world.statuses() == {"CAPTURED": 1, "VOIDED": 1}


# --- refunds ------------------------------------------------------------------------------------


async def test_a_refund_happens_once_and_repeats_answer_the_same(world):
    token = await world.token()
    charged = await world.charge("o-1", token, amount_cents=3100)
    refunded = await world.payments.refund("o-1")
    assert (refunded.id, refunded.status) == (charged.id, PaymentStatus.REFUNDED)
    assert len(world.processor.refunds) == 1

    calls = len(world.processor.calls)
    again = await world.payments.refund("o-1")
    assert (again.id, again.status, again.processor_refund_id) == (refunded.id, refunded.status,
                                                                    refunded.processor_refund_id)
    assert (await world.charge("o-1", token, amount_cents=3100)).status == PaymentStatus.REFUNDED
    assert len(world.processor.calls) == calls
    assert await world.money() == (3100, 3100, 0)
    assert await world.event_types() == [EventType.PAYMENT_CAPTURED, EventType.PAYMENT_REFUNDED]


async def test_a_declined_payment_is_not_refunded(world, cards):
    with pytest.raises(CardDeclined):
        await world.charge("o-1", await world.token(cards["declined"]))
    with pytest.raises(PaymentNotCaptured):
        await world.payments.refund("o-1")


async def test_a_refund_during_an_outage_changes_nothing(world):
    await world.charge("o-1", await world.token())
    world.processor.down = True
    with pytest.raises(ProcessorUnavailable):
        await world.payments.refund("o-1")
    assert await world.status("o-1") == PaymentStatus.CAPTURED and (await world.money())[1] == 0
    world.processor.down = False
    assert (await world.payments.refund("o-1")).status == PaymentStatus.REFUNDED


# --- intents and tombstones: a refund may come before, during or after a charge ---------------


async def test_a_refund_before_any_charge_leaves_a_tombstone_that_refuses_the_charge(world):
    token = await world.token()
    voided = await world.payments.refund("o-1")
    assert (voided.status, voided.amount_cents, voided.customer_id) == (PaymentStatus.VOIDED, 0, "")
    assert (await world.payments.refund("o-1")).id == voided.id

    calls = len(world.processor.calls)
    for key in (None, "another-key"):
        with pytest.raises(PaymentVoided):
            await world.charge("o-1", token, key=key)
    assert len(world.processor.calls) == calls  # refused without calling it
    assert await world.money() == NO_MONEY and await world.statuses() == {"VOIDED": 1}


async def test_a_lost_answer_leaves_the_payment_pending_and_a_repeat_settles_it_with_the_stored_key(world):
    token = await world.token()
    world.processor.lose_answers_to = {"charge"}
    with pytest.raises(ProcessorUnavailable):
        await world.charge("o-1", token, key="first-key")
    assert len(world.processor.charges) == 1 and await world.status("o-1") == PaymentStatus.PENDING
    assert await world.money() == NO_MONEY  # an intent moves no money

    world.processor.lose_answers_to = set()
    with pytest.raises(PaymentMismatch):
        await world.charge("o-1", token, amount_cents=2600, key="second-key")
    settled = await world.charge("o-1", token, key="third-key")
    assert settled.status == PaymentStatus.CAPTURED
    assert list(world.processor.charges) == ["first-key"]  # the key stored with the intent
    assert await world.money() == (2599, 0, 2599)


async def test_a_refund_captures_then_refunds_a_pending_payment_the_processor_did_charge(world):
    world.processor.lose_answers_to = {"charge"}
    with pytest.raises(ProcessorUnavailable):
        await world.charge("o-1", await world.token(), amount_cents=6100)
    world.processor.lose_answers_to = set()

    refunded = await world.payments.refund("o-1")
    assert (refunded.status, refunded.amount_cents, refunded.card_last4) == (PaymentStatus.REFUNDED, 6100, "4242")
    assert world.processor.live_charges() == []
    assert await world.money() == (6100, 6100, 0)
    assert await world.event_types() == [EventType.PAYMENT_CAPTURED, EventType.PAYMENT_REFUNDED]


async def test_a_refund_records_a_decline_it_finds_for_a_pending_payment(world, cards):
    world.processor.lose_answers_to = {"charge"}
    with pytest.raises(ProcessorUnavailable):
        await world.charge("o-1", await world.token(cards["declined"]))
    world.processor.lose_answers_to = set()
    with pytest.raises(PaymentNotCaptured):
        await world.payments.refund("o-1")
    assert await world.status("o-1") == PaymentStatus.DECLINED and await world.money() == NO_MONEY


async def test_a_refund_voids_a_pending_payment_the_processor_never_charged(world):
    token = await world.token()
    world.processor.down = True
    with pytest.raises(ProcessorUnavailable):
        await world.charge("o-1", token)
    with pytest.raises(ProcessorUnavailable):  # it cannot be settled without asking
        await world.payments.refund("o-1")
    assert await world.status("o-1") == PaymentStatus.PENDING

    world.processor.down = False
    assert (await world.payments.refund("o-1")).status == PaymentStatus.VOIDED
    with pytest.raises(PaymentVoided):
        await world.charge("o-1", token)
    assert world.processor.charges == {} and await world.statuses() == {"VOIDED": 1}


async def test_a_charge_completing_after_a_void_is_given_back_at_once(world):
    token = await world.token()
    refunds_in_flight = []

    async def refund_meanwhile() -> None:  # the processor has not made the charge yet
        refunds_in_flight.append(await world.payments.refund("o-1"))

    world.processor.before_charge = refund_meanwhile
    with pytest.raises(PaymentVoided):
        await world.charge("o-1", token, amount_cents=4200)
    [voided] = refunds_in_flight
    assert voided.status == PaymentStatus.VOIDED and voided.amount_cents == 4200  # the intent's figures stay
    [charge] = world.processor.charges.values()
    assert charge.approved and charge.refunded and list(world.processor.refunds) == [f"void-{charge.id}"]
    assert await world.money() == NO_MONEY and await world.event_types() == []  # the ledger never held it

    calls = len(world.processor.calls)
    with pytest.raises(PaymentVoided):
        await world.charge("o-1", token, amount_cents=4200)
    assert (await world.payments.refund("o-1")).status == PaymentStatus.VOIDED
    assert len(world.processor.calls) == calls  # the void is done: nothing to repeat


async def test_a_void_whose_answer_is_lost_is_finished_by_the_next_call(world):
    token = await world.token()

    async def refund_meanwhile() -> None:
        await world.payments.refund("o-1")
        world.processor.lose_answers_to = {"refund"}

    world.processor.before_charge = refund_meanwhile
    with pytest.raises(ProcessorUnavailable):  # the late charge is given back, but no answer comes
        await world.charge("o-1", token)
    assert world.processor.live_charges() == []
    assert (await world.payments.store.find("o-1")).processor_refund_id is None

    world.processor.lose_answers_to = set()
    with pytest.raises(PaymentVoided):  # repeats the void, with the same key
        await world.charge("o-1", token)
    assert len(world.processor.refunds) == 1
    assert (await world.payments.store.find("o-1")).processor_refund_id is not None


# --- reading ------------------------------------------------------------------------------------


async def test_a_payment_is_visible_to_its_customer_admins_and_services_only(world):
    await world.charge("o-1", await world.token(), customer_id="c-1")
    for viewer in (Principal("c-1", "customer"), Principal("a-1", "admin"), Principal("service:orders", "service")):
        assert (await world.payments.get(viewer, "o-1")).order_id == "o-1"
    for order_id in ("o-1", "o-unknown"):  # someone else's looks exactly like a missing one
        with pytest.raises(PaymentNotFound):
            await world.payments.get(Principal("c-2", "customer"), order_id)


async def test_the_ledger_sums_captures_and_refunds_and_counts_every_status(world, cards):
    token = await world.token()
    for order_id, amount in (("o-1", 1000), ("o-2", 2000), ("o-3", 3000)):
        await world.charge(order_id, token, amount_cents=amount)
    with pytest.raises(CardDeclined):
        await world.charge("o-4", await world.token(cards["declined"]), amount_cents=500)
    await world.payments.refund("o-2")
    await world.payments.refund("o-5")  # a tombstone: no money

    totals = await world.payments.ledger()
    assert (totals.captured_cents, totals.refunded_cents, totals.net_cents) == (6000, 2000, 4000)
    assert (totals.captures, totals.refunds) == (3, 1)
    assert totals.payments_by_status == {"PENDING": 0, "CAPTURED": 2, "DECLINED": 1, "REFUNDED": 1, "VOIDED": 1}

    page, total = await world.payments.list(status=PaymentStatus.CAPTURED, limit=10, offset=0)
    assert total == 2 and sorted(p.order_id for p in page) == ["o-1", "o-3"]
    first, total = await world.payments.list(status=None, limit=2, offset=0)
    rest, _ = await world.payments.list(status=None, limit=10, offset=2)
    assert total == 5 and len(first) == 2 and len({p.id for p in first + rest}) == 5
