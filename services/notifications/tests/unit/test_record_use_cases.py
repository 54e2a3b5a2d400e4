"""Recording notifications from events (each once) and reading them (your own, or all for an admin)."""

import pytest
from microshop_chassis.events import Event
from microshop_notifications.domain import NotificationNotFound, NotificationType


async def test_a_redelivered_event_is_recorded_once(world):
    event = world.events.order("OrderConfirmed")
    await world.notifications.record(event)
    await world.notifications.record(event)
    assert len(await world.all()) == 1 and await world.notifications.pending_count() == 1


async def test_one_order_outcome_under_two_event_ids_is_recorded_once(world):
    event = world.events.order("OrderCancelled")
    again = Event(type=event.type, source=event.source, data=event.data)  # same order, new event id
    await world.notifications.record(event)
    await world.notifications.record(again)
    [notification] = await world.all()
    assert notification.event_id == event.id


async def test_each_outcome_of_one_order_is_recorded(world):
    confirmed = world.events.order("OrderConfirmed")
    cancelled = world.events.order("OrderCancelled", customer_id=confirmed.data["customer_id"],
                                   order_id=confirmed.data["order_id"])
    await world.notifications.record(confirmed)
    await world.notifications.record(cancelled)
    assert {n.type for n in await world.all()} == {"order_confirmed", "order_cancelled"}


async def test_customers_read_their_own_and_admins_read_all(world):
    ada, bob = "ada-0001", "bob-0001"
    for event in (world.events.order(customer_id=ada), world.events.user_registered(user_id=ada),
                  world.events.order("OrderRejected", customer_id=bob)):
        await world.notifications.record(event)
    list_for = world.notifications.list

    mine, total = await list_for(world.customer(ada), type=None, order_id=None, limit=10, offset=0)
    assert total == 2 and {n.user_id for n in mine} == {ada}
    everyone, total = await list_for(world.admin(), type=None, order_id=None, limit=10, offset=0)
    assert total == 3
    assert [n.created_at for n in everyone] == sorted((n.created_at for n in everyone), reverse=True)
    welcomes, total = await list_for(world.admin(), type=NotificationType.WELCOME, order_id=None, limit=10, offset=0)
    assert total == 1 and welcomes[0].type == "welcome"
    page, total = await list_for(world.admin(), type=None, order_id=None, limit=1, offset=1)
    assert total == 3 and [n.id for n in page] == [everyone[1].id]

    bobs = next(n for n in everyone if n.user_id == bob)
    assert (await world.notifications.get(world.customer(bob), bobs.id)).id == bobs.id
    assert (await world.notifications.get(world.admin(), bobs.id)).recipient == bobs.recipient
    # Someone else's notification is answered exactly like a missing one.
    with pytest.raises(NotificationNotFound, match=f"No notification {bobs.id}"):
        await world.notifications.get(world.customer(ada), bobs.id)
    with pytest.raises(NotificationNotFound):
        await world.notifications.get(world.admin(), "no-such-id")
