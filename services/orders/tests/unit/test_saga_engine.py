"""The saga engine on orders' real store (SQLite in memory) with in-memory inventory and
payments: deadlines, technical failures, two drivers of one saga, recovery."""

import asyncio
from datetime import timedelta

import sqlalchemy as sa
from microshop_chassis.db import utcnow
from microshop_orders.domain import DEADLINE_REASON, OrderStatus, Step
from microshop_orders.models import Order
from microshop_orders.saga import SagaRecovery


async def _pending(world, make_checkout, *lines):
    """An order created and left at its first step (inventory down), as a crash would leave it."""
    world.orders.checkout_wait = 0.05
    world.inventory.down = True
    world.inventory.prices = world.inventory.up_for("prices")
    order, _ = await world.orders.place(world.customer(), "k1", make_checkout(*lines))
    await world.saga.stop()
    world.inventory.down = False
    return await world.saga.load(order.id)


async def _age(world, order_id: str, seconds: float) -> None:
    async with world.store.db.transaction() as session:
        await session.execute(sa.update(Order).where(Order.id == order_id)
                              .values(created_at=utcnow() - timedelta(seconds=seconds)))


async def test_a_technical_failure_keeps_the_step_and_counts_the_attempt(world, make_checkout):
    order = await _pending(world, make_checkout)
    assert order.saga_step == Step.RESERVE_STOCK and order.saga_attempts == 1
    assert "inventory unavailable" in order.saga_last_error and order.saga_lease_until > utcnow()
    done = await world.saga.drive(order.id)
    assert done.status == OrderStatus.CONFIRMED and done.saga_attempts == 0


async def test_past_the_deadline_a_stuck_reservation_is_released_not_retried(world, make_checkout):
    order = await _pending(world, make_checkout, ("tee", 2))
    await _age(world, order.id, 61)
    before = len(world.inventory.calls)
    done = await world.saga.drive(order.id)
    assert done.status == OrderStatus.REJECTED and done.reason == DEADLINE_REASON
    assert world.inventory.calls[before:] == [("release", order.id)]  # released, never reserved again
    assert world.inventory.reservations[order.id]["status"] == "RELEASED" and world.inventory.stock["tee"] == 5


async def test_past_the_deadline_a_stuck_charge_is_voided_then_the_stock_released(world, make_checkout):
    world.orders.checkout_wait = 0.05
    world.payments.down = True
    tokenize = type(world.payments).tokenize
    world.payments.down = False
    card = await tokenize(world.payments, make_checkout().card, "c1")
    world.payments.down = True
    world.payments.tokenize = lambda _card, _customer_id: _return(card)
    order, _ = await world.orders.place(world.customer(), "k1", make_checkout(("mug", 3)))
    assert order.saga_step == Step.CHARGE_PAYMENT and world.inventory.stock["mug"] == 7
    await world.saga.stop()
    await _age(world, order.id, 61)
    world.payments.down = False
    done = await world.saga.drive(order.id)
    assert done.status == OrderStatus.REJECTED and done.reason == DEADLINE_REASON
    assert world.payments.charges == 0 and world.payments.payments[order.id]["status"] == "VOIDED"
    assert world.inventory.stock["mug"] == 10


async def test_after_the_charge_the_saga_only_goes_forward(world, make_checkout):
    order, _ = await world.orders.place(world.customer(), "k1", make_checkout())
    async with world.store.db.transaction() as session:  # as if the commit had not been recorded yet
        await session.execute(sa.update(Order).where(Order.id == order.id)
                              .values(saga_step=Step.COMMIT_STOCK.value, status=OrderStatus.PENDING.value))
    await _age(world, order.id, 3600)
    done = await world.saga.drive(order.id)
    assert done.status == OrderStatus.CONFIRMED


async def test_two_drivers_of_one_saga_record_each_move_once(world, make_checkout):
    order = await _pending(world, make_checkout)
    first, second = world.saga, type(world.saga)(world.store, world.inventory, world.payments, lease_seconds=10)
    results = [await first.drive(order.id), await second.drive(order.id)]
    assert {r.status for r in results} == {OrderStatus.CONFIRMED}
    assert world.payments.charges == 1  # the second driver found the saga done


async def test_recovery_takes_over_open_sagas_at_start_on_a_single_writer_database(world, make_checkout):
    order = await _pending(world, make_checkout)
    recovery = SagaRecovery(world.saga, interval=0.01, take_over_at_start=True)
    assert await recovery.round() is False  # its lease has not run out, yet it is taken
    assert world.saga.running() == {order.id}
    done = await world.saga.start(order.id)  # the task recovery started
    assert done.status == OrderStatus.CONFIRMED
    later = SagaRecovery(world.saga, interval=0.01, take_over_at_start=False)
    await later.round()  # nothing open is left
    assert world.saga.running() == set()


async def test_a_graceful_stop_lets_the_sagas_under_way_finish(world, make_checkout):
    order = await _pending(world, make_checkout)
    charging, release = asyncio.Event(), asyncio.Event()
    charge = world.payments.charge

    async def held_charge(**kwargs):
        charging.set()
        await release.wait()
        return await charge(**kwargs)

    world.payments.charge = held_charge
    recovery = SagaRecovery(world.saga, interval=0.01, take_over_at_start=True)
    recovery.start()
    await charging.wait()  # a saga is mid-step when the stop begins
    draining = asyncio.create_task(recovery.drain(5))
    release.set()
    await draining
    await recovery.stop()
    assert (await world.saga.load(order.id)).status == OrderStatus.CONFIRMED


async def _return(value):
    return value
