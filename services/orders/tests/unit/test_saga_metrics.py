"""The checkout's business figures (orders' /metrics) as the saga ends each outcome: what the
production dashboard and SLO rules of deploy/observability/ are built on."""

from datetime import timedelta

import sqlalchemy as sa
from microshop_chassis.db import utcnow
from microshop_orders.domain import DEADLINE_REASON, OrderStatus
from microshop_orders.models import Order


def figure(world, name: str, **labels: str) -> float:
    return world.metrics.value(name, labels) or 0.0


def checkouts(world) -> dict[str, float]:
    """The checkouts ended, by outcome (outcomes never counted left out)."""
    counts = {outcome: figure(world, "checkouts_total", outcome=outcome)
              for outcome in ("CONFIRMED", "REJECTED", "NEEDS_ATTENTION")}
    return {outcome: count for outcome, count in counts.items() if count}


async def test_a_confirmed_checkout_counts_its_outcome_revenue_and_duration(world, make_checkout):
    order, _ = await world.orders.place(world.customer(), "k1", make_checkout(("mug", 2), ("tee", 1)))
    assert order.status == OrderStatus.CONFIRMED
    assert checkouts(world) == {"CONFIRMED": 1}
    assert figure(world, "revenue_cents_total", currency="USD") == 2 * 1200 + 2500
    assert figure(world, "saga_duration_seconds_count") == 1
    assert 0 <= figure(world, "saga_duration_seconds_sum") < 5
    assert world.metrics.value("order_rejections_total", {"reason": "out_of_stock"}) is None


async def test_a_replayed_checkout_is_counted_once(world, make_checkout):
    await world.orders.place(world.customer(), "k1", make_checkout())
    await world.orders.place(world.customer(), "k1", make_checkout())
    assert checkouts(world) == {"CONFIRMED": 1} and figure(world, "revenue_cents_total", currency="USD") == 2400


async def test_out_of_stock_is_a_rejection_with_nothing_to_compensate(world, make_checkout):
    await world.orders.place(world.customer(), "k1", make_checkout(("tee", 6)))
    assert checkouts(world) == {"REJECTED": 1}
    assert figure(world, "order_rejections_total", reason="out_of_stock") == 1
    assert figure(world, "saga_compensations_total", step="release_stock") == 0
    assert figure(world, "revenue_cents_total", currency="USD") == 0


async def test_a_declined_card_counts_its_cause_and_the_stock_released(world, make_checkout, cards):
    await world.orders.place(world.customer(), "k1", make_checkout(("mug", 3), card=cards["declined"]))
    assert checkouts(world) == {"REJECTED": 1}
    assert figure(world, "order_rejections_total", reason="payment_declined") == 1
    assert figure(world, "saga_compensations_total", step="release_stock") == 1
    assert figure(world, "saga_duration_seconds_count") == 1


async def test_a_reservation_expired_at_commit_is_refunded_then_released(world, make_checkout):
    commit = world.inventory.commit

    async def expired_first(order_id):
        world.inventory.reservations[order_id]["status"] = "EXPIRED"
        return await commit(order_id)

    world.inventory.commit = expired_first
    await world.orders.place(world.customer(), "k1", make_checkout())
    assert checkouts(world) == {"REJECTED": 1}
    assert figure(world, "order_rejections_total", reason="reservation_expired") == 1
    assert figure(world, "saga_compensations_total", step="refund_payment") == 1
    assert figure(world, "saga_compensations_total", step="release_stock") == 1


async def test_a_checkout_past_its_deadline_counts_as_a_deadline_rejection(world, make_checkout):
    world.orders.checkout_wait = 0.05
    world.inventory.down = True
    world.inventory.prices = world.inventory.up_for("prices")
    order, _ = await world.orders.place(world.customer(), "k1", make_checkout())
    await world.saga.stop()
    assert checkouts(world) == {}  # a stalled step ends nothing
    async with world.store.db.transaction() as session:
        await session.execute(sa.update(Order).where(Order.id == order.id)
                              .values(created_at=utcnow() - timedelta(seconds=61)))
    world.inventory.down = False
    done = await world.saga.drive(order.id)
    assert done.reason == DEADLINE_REASON and checkouts(world) == {"REJECTED": 1}
    assert figure(world, "order_rejections_total", reason="deadline") == 1
    assert figure(world, "saga_duration_seconds_count") == 1 and figure(world, "saga_duration_seconds_sum") >= 61


async def test_a_cancellation_is_not_a_second_checkout(world, make_checkout):
    customer = world.customer()
    order, _ = await world.orders.place(customer, "k1", make_checkout(("mug", 4)))
    await world.orders.cancel(customer, order.id)
    assert figure(world, "order_cancellations_total", outcome="CANCELLED") == 1
    assert checkouts(world) == {"CONFIRMED": 1} and figure(world, "saga_duration_seconds_count") == 1
    assert figure(world, "saga_compensations_total", step="refund_payment") == 0  # a cancel is no compensation
