"""Reports' use cases on the real store (DuckDB in memory) with the broker faked: opening the model
at start, the rebuild by replay (the consumer held meanwhile), its refusals, the status, and the
replay at start that retries until it succeeds."""

import asyncio

import pytest

from microshop_chassis.events import Event
from microshop_reports.domain import (
    SCHEMA_VERSION,
    BrokerUnavailable,
    RebuildInProgress,
    RebuildSummary,
    ReplayFailed,
)
from microshop_reports.service import StartupReplay


def shop_day(shop) -> list[Event]:
    """Two checkouts that share a SKU, one pending order, one rejected."""
    first = shop.order(("mug", 2, 1500), ("tee", 1, 2500))
    second = shop.order(("cap", 1, 2500), ("mug", 1, 1500), customer_id="customer-2")
    pending, refused = shop.order(("tee", 5, 2500)), shop.order(("cap", 9, 2500))
    return [*shop.checkout(first), *shop.checkout(second), shop.placed(pending), shop.placed(refused),
            shop.rejected(refused)]


async def test_an_empty_model_holds_the_consumer_until_the_replay_at_start(world, shop):
    world.stream.events = shop_day(shop)
    assert world.reports.replay_due and world.consumer.paused
    status = await world.reports.status()
    assert (status.replaying, status.schema_version, status.code_schema_version) == (True, None, SCHEMA_VERSION)

    result = await world.reports.replay_if_due()
    assert result is not None and (result.events_replayed, result.events_applied) == (9, 9)
    assert world.calls == ["pause", "pause", "read", "resume"]  # held at open, then by the rebuild
    status = await world.reports.status()
    assert (status.replaying, status.schema_version, status.events_applied) == (False, SCHEMA_VERSION, 9)
    assert (await world.reports.sales()).orders_confirmed == 2
    assert await world.reports.replay_if_due() is None  # once only


async def test_a_current_model_lets_the_consumer_go_at_once(make_world, shop, tmp_path):
    path = str(tmp_path / "reports.duckdb")
    first = await make_world(path)
    first.stream.events = shop_day(shop)
    await first.reports.rebuild()
    await first.store.close()

    again = await make_world(path)  # a restart on the same file
    assert not again.reports.replay_due and not again.consumer.paused
    assert again.calls == ["pause", "resume"]
    assert await again.reports.replay_if_due() is None
    assert (await again.reports.status()).events_applied == 9


async def test_a_rebuild_replays_the_stream_and_repairs_the_model(world, shop):
    events = shop_day(shop)
    world.stream.events = [*events, events[0]]  # a duplicate in the stream itself
    ghost = shop.order(("lamp", 1, 99999))
    await world.projection.apply_batch(shop.checkout(ghost))  # something no event of the stream explains
    world.consumer.resume()

    result = await world.reports.rebuild()
    assert (result.events_replayed, result.events_applied) == (10, 9) and result.duration_ms >= 0
    assert world.calls[-3:] == ["pause", "read", "resume"]
    sales = await world.reports.sales()
    assert (sales.orders_confirmed, sales.revenue_cents) == (2, 9500)
    assert "lamp" not in {p.sku for p in sales.by_product}


async def test_a_rebuild_leaves_malformed_events_out(world, shop):
    order = shop.order(("mug", 1, 1500))
    broken = Event(type="OrderPlaced", source="orders", data={"order_id": "no-items"})
    world.stream.events = [broken, *shop.checkout(order)]
    result = await world.reports.rebuild()
    assert (result.events_replayed, result.events_applied) == (4, 3)
    assert (await world.reports.sales()).orders_confirmed == 1


async def test_a_failed_replay_keeps_the_old_model_and_resumes_the_consumer(world, shop):
    world.stream.events = shop_day(shop)
    await world.reports.rebuild()
    before = await world.reports.sales()

    world.stream.events = world.stream.events[:3]
    world.stream.failures = 1
    with pytest.raises(ReplayFailed, match="ServiceUnavailable: broker unavailable"):
        await world.reports.rebuild()
    assert not world.consumer.paused and world.calls[-3:] == ["pause", "read", "resume"]
    assert await world.reports.sales() == before
    assert (await world.reports.status()).schema_version == SCHEMA_VERSION

    world.stream.failures = 0  # the fresh tables were dropped: the next rebuild starts clean
    assert (await world.reports.rebuild()).events_applied == 3


async def test_one_rebuild_at_a_time(world, shop):
    world.stream.events = shop_day(shop)
    world.stream.gate.clear()
    running = asyncio.create_task(world.reports.rebuild())
    await asyncio.wait_for(world.stream.reading.wait(), 1)

    with pytest.raises(RebuildInProgress):
        await world.reports.rebuild()
    assert world.consumer.paused
    world.stream.gate.set()
    assert (await running).events_applied == 9
    assert not world.consumer.paused


async def test_no_rebuild_without_the_broker(world):
    world.consumer.resume()
    world.stream.disconnect()
    with pytest.raises(BrokerUnavailable):
        await world.reports.rebuild()
    assert world.calls == ["pause", "resume"]  # the consumer was never held for it


async def test_status_shows_the_consumer_lag_while_the_broker_can_tell(world, shop):
    await world.projection.apply_batch(shop.checkout(shop.order(("mug", 1, 1500))))
    world.consumer.lag = 4
    status = await world.reports.status()
    assert (status.events_applied, status.consumer_pending) == (3, 4)
    assert status.last_event_at is not None

    world.stream.disconnect()
    assert (await world.reports.status()).consumer_pending is None


async def test_the_startup_replay_waits_for_the_broker_and_retries_until_it_succeeds(world, shop):
    world.stream.events = shop_day(shop)
    world.stream.disconnect()
    world.stream.failures = 1
    startup = StartupReplay(world.reports)
    startup.backoff_initial = 0.01
    running = asyncio.create_task(startup.run())
    await asyncio.sleep(0.01)
    assert not running.done() and world.calls == ["pause"]  # waiting for the broker, consumer held

    world.stream.connect()
    await asyncio.wait_for(running, 2)  # one failed replay, then one that succeeded: finished
    assert world.calls == ["pause", "pause", "read", "resume", "pause", "read", "resume"]
    assert not world.reports.replay_due and (await world.reports.status()).schema_version == SCHEMA_VERSION


async def test_the_startup_replay_finishes_at_once_on_a_current_model(world, shop):
    world.stream.events = shop_day(shop)
    assert isinstance(await world.reports.rebuild(), RebuildSummary)
    calls = list(world.calls)
    await asyncio.wait_for(StartupReplay(world.reports).run(), 1)
    assert world.calls == calls
