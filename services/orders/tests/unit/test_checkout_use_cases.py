"""orders' use cases against in-memory inventory and payments: the whole checkout, each outcome,
idempotency and cancellation, in milliseconds."""

import pytest
from microshop_chassis.contracts import EventType
from microshop_chassis.testing import outbox_events
from microshop_orders.domain import (
    CheckoutUnavailable,
    IdempotencyKeyReused,
    InvalidCard,
    OrderNotCancellable,
    OrderNotFound,
    OrderStatus,
    UnknownProducts,
)


async def test_an_approved_checkout_confirms_and_writes_its_events(world, make_checkout):
    order, replayed = await world.orders.place(world.customer(), "k1", make_checkout(("mug", 2), ("tee", 1)))
    assert not replayed
    assert order.status == OrderStatus.CONFIRMED and order.total_cents == 2 * 1200 + 2500
    assert world.inventory.reservations[order.id]["status"] == "COMMITTED"
    assert world.payments.payments[order.id]["status"] == "CAPTURED" and order.payment_id
    events = await outbox_events(world.store.db)
    assert [e["type"] for e in events] == [EventType.ORDER_PLACED, EventType.ORDER_CONFIRMED]
    assert events[1]["data"]["payment_id"] == order.payment_id
    assert order.card_last4 == "4242" and "4242424242424242" not in order.card_token + str(events)


async def test_out_of_stock_rejects_and_charges_nothing(world, make_checkout):
    order, _ = await world.orders.place(world.customer(), "k1", make_checkout(("tee", 6)))
    assert order.status == OrderStatus.REJECTED and "tee" in order.reason
    assert world.payments.charges == 0 and world.inventory.stock["tee"] == 5


async def test_a_declined_card_releases_the_stock(world, make_checkout, cards):
    order, _ = await world.orders.place(world.customer(), "k1", make_checkout(("mug", 3), card=cards["declined"]))
    assert order.status == OrderStatus.REJECTED and "declined" in order.reason
    assert world.inventory.reservations[order.id]["status"] == "RELEASED" and world.inventory.stock["mug"] == 10
    events = await outbox_events(world.store.db)
    assert events[-1]["type"] == EventType.ORDER_REJECTED and events[-1]["data"]["reason"] == order.reason


async def test_the_same_key_and_body_replay_the_order_and_another_body_is_refused(world, make_checkout):
    first, _ = await world.orders.place(world.customer(), "k1", make_checkout())
    again, replayed = await world.orders.place(world.customer(), "k1", make_checkout())
    assert replayed and again.id == first.id and world.payments.charges == 1
    with pytest.raises(IdempotencyKeyReused):
        await world.orders.place(world.customer(), "k1", make_checkout(("tee", 1)))
    theirs, replayed = await world.orders.place(world.customer("c2"), "k1", make_checkout())
    assert not replayed and theirs.id != first.id


async def test_refusals_before_the_order_exists_create_nothing(world, make_checkout, cards):
    customer = world.customer()
    with pytest.raises(UnknownProducts) as unknown:
        await world.orders.place(customer, "k1", make_checkout(("nope", 1)))
    assert unknown.value.skus == ["nope"]
    bad_card = cards["approved"].__class__(number="4242-4242", expiry_month=1, expiry_year=2030, cvc="123")
    with pytest.raises(InvalidCard):
        await world.orders.place(customer, "k2", make_checkout(card=bad_card))
    world.payments.down = True
    with pytest.raises(CheckoutUnavailable) as unavailable:
        await world.orders.place(customer, "k3", make_checkout())
    assert "payments" in unavailable.value.cause
    assert (await world.orders.list(customer, status=None, limit=10, offset=0)) == ([], 0)


async def test_payments_down_leaves_the_order_pending_and_it_completes_later(world, make_checkout):
    world.orders.checkout_wait = 0.05
    world.payments.down = True
    world.payments.tokenize = world.payments.up_for("tokenize")  # down only for the charge
    order, _ = await world.orders.place(world.customer(), "k1", make_checkout())
    assert order.status == OrderStatus.PENDING and order.saga_attempts == 1
    world.payments.down = False
    done = await world.saga.drive(order.id)
    assert done.status == OrderStatus.CONFIRMED and len(world.payments.payments) == 1


async def test_cancel_refunds_and_restocks_once(world, make_checkout):
    customer = world.customer()
    order, _ = await world.orders.place(customer, "k1", make_checkout(("mug", 4)))
    assert world.inventory.stock["mug"] == 6
    cancelled = await world.orders.cancel(customer, order.id)
    assert cancelled.status == OrderStatus.CANCELLED
    assert world.payments.payments[order.id]["status"] == "REFUNDED" and world.inventory.stock["mug"] == 10
    with pytest.raises(OrderNotCancellable) as again:
        await world.orders.cancel(customer, order.id)
    assert again.value.order_status == "CANCELLED" and world.payments.refunds == 1


async def test_only_the_owner_an_admin_or_a_service_sees_an_order(world, make_checkout):
    order, _ = await world.orders.place(world.customer("alice"), "k1", make_checkout())
    with pytest.raises(OrderNotFound):
        await world.orders.get(world.customer("bob"), order.id)
    assert (await world.orders.list(world.customer("bob"), status=None, limit=10, offset=0))[1] == 0
    admin = world.customer("root").__class__(id="root", role="admin")
    assert (await world.orders.get(admin, order.id)).id == order.id
    assert (await world.orders.list(admin, status=OrderStatus.CONFIRMED, limit=10, offset=0))[1] == 1

