"""The consumer's handler: an event becomes a PENDING notification and wakes the delivery worker;
an event breaking its contract is poison, dead-lettered at once by the chassis."""

import pytest
from microshop_chassis.consumer import PoisonEvent
from microshop_chassis.events import Event
from microshop_notifications.consumer import event_handler


@pytest.fixture
def handled(world):
    """The handler as the consumer runs it, and how often it woke the worker."""
    wakes = []
    return event_handler(world.notifications, on_recorded=lambda: wakes.append(1)), wakes


async def test_an_event_is_recorded_pending_and_wakes_the_worker(world, handled):
    handle, wakes = handled
    event = world.events.order("OrderConfirmed")
    await handle(event)
    [notification] = await world.all()
    assert (notification.event_id, notification.status, notification.attempts) == (event.id, "PENDING", 0)
    assert wakes == [1]


@pytest.mark.parametrize(
    ("change", "named"),
    [({"customer_email": None}, "customer_email"), ({"customer_email": "nobody"}, "nobody"),
     ({"items": []}, "items")],
)
async def test_an_event_breaking_its_contract_is_poison(world, handled, change, named):
    handle, wakes = handled
    event = world.events.order("OrderConfirmed")
    event.data = {k: v for k, v in {**event.data, **change}.items() if v is not None}
    with pytest.raises(PoisonEvent, match=named):
        await handle(event)
    assert await world.all() == [] and wakes == []


async def test_an_event_type_it_does_not_handle_is_poison(world, handled):
    handle, _ = handled
    with pytest.raises(PoisonEvent, match="PaymentCaptured"):
        await handle(Event(type="PaymentCaptured", source="payments", data={}))
