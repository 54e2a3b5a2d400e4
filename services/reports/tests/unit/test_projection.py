"""Live events folded into the model by the consumer's handlers, on the real store (DuckDB in
memory): what each event does to the figures, in any order, once."""

import pytest
from pydantic import ValidationError

from microshop_chassis.consumer import PoisonEvent
from microshop_chassis.events import Event
from microshop_reports.domain import Sales, SkuSales
from microshop_reports.schemas import parse_event_data
from microshop_reports.service import Projection


@pytest.fixture
def projection(store) -> Projection:
    return Projection(store)


async def apply_each(projection: Projection, events: list[Event]) -> None:
    for event in events:
        await projection.apply(event)


async def test_an_order_counts_once_confirmed(projection, store, shop):
    order = shop.order(("mug", 2, 1500), ("tee", 1, 2500))
    placed, captured, confirmed = shop.checkout(order)

    await apply_each(projection, [placed, captured])
    pending = await store.sales()
    assert (pending.orders_placed, pending.orders_confirmed, pending.by_product) == (1, 0, [])
    assert pending.payments_captured_cents == 5500

    await projection.apply(confirmed)
    assert await store.sales() == Sales(
        orders_confirmed=1, revenue_cents=5500, units_sold=3,
        by_product=[SkuSales("mug", 2, 3000), SkuSales("tee", 1, 2500)],
        orders_placed=0, orders_rejected=0, orders_cancelled=0,
        payments_captured_cents=5500, payments_refunded_cents=0,
    )
    assert await store.progress() == (3, confirmed.occurred_at, None)  # unversioned until a replay


async def test_a_cancellation_nets_the_order_out(projection, store, shop):
    kept, dropped = shop.order(("mug", 1, 1500)), shop.order(("lamp", 2, 4000))
    await apply_each(projection, [*shop.checkout(kept), *shop.checkout(dropped)])
    await apply_each(projection, [shop.cancelled(dropped), shop.refunded(dropped)])

    sales = await store.sales()
    assert (sales.orders_confirmed, sales.revenue_cents, sales.units_sold) == (1, 1500, 1)
    assert sales.by_product == [SkuSales("mug", 1, 1500)]
    assert sales.orders_cancelled == 1
    assert (sales.payments_captured_cents, sales.payments_refunded_cents) == (9500, 8000)


async def test_a_rejected_order_never_sells(projection, store, shop):
    refused = shop.order(("cap", 9, 2500))
    await apply_each(projection, [shop.placed(refused), shop.rejected(refused)])
    sales = await store.sales()
    assert (sales.orders_rejected, sales.orders_placed, sales.orders_confirmed, sales.by_product) == (1, 0, 0, [])


async def test_events_out_of_order_still_land(projection, store, shop):
    order = shop.order(("mug", 1, 1500))
    placed, captured, confirmed = shop.checkout(order)
    refunded = shop.refunded(order)
    # The confirmation overtakes the placement, and the refund overtakes the capture.
    await apply_each(projection, [confirmed, placed, refunded, captured])

    sales = await store.sales()
    assert (sales.orders_confirmed, sales.orders_placed, sales.units_sold) == (1, 0, 1)
    assert (sales.payments_captured_cents, sales.payments_refunded_cents) == (1500, 1500)


async def test_a_redelivered_event_changes_nothing(projection, store, shop):
    order = shop.order(("mug", 3, 1500))
    placed, confirmed = shop.placed(order), shop.confirmed(order)
    await apply_each(projection, [placed, confirmed])
    before = await store.sales()

    # The same event ids again (a redelivery): only the ids tell them apart from new events.
    assert await store.apply(confirmed, parse_event_data(confirmed)) is False
    await apply_each(projection, [placed, confirmed])
    assert await store.sales() == before
    assert (await store.progress())[0] == 2


async def test_a_batch_counts_each_event_once(projection, store, shop):
    order = shop.order(("mug", 1, 1500), ("tee", 2, 2500))
    placed, captured, confirmed = shop.checkout(order)
    await projection.apply_batch([placed, captured, placed, confirmed])  # a redelivery inside the batch
    await projection.apply_batch([confirmed])  # and one in the next

    sales = await store.sales()
    assert (sales.orders_confirmed, sales.units_sold, sales.revenue_cents) == (1, 3, 6500)
    assert (await store.progress())[0] == 3


async def test_figures_by_product_sort_by_revenue_then_sku(projection, store, shop):
    first = shop.order(("mug", 2, 1500), ("tee", 1, 2500))
    second = shop.order(("cap", 1, 2500), ("mug", 1, 1500), customer_id="customer-2")
    await projection.apply_batch([*shop.checkout(first), *shop.checkout(second)])
    # Ties on revenue fall back to the SKU: cap and tee both sold 2500.
    assert [p.sku for p in (await store.sales()).by_product] == ["mug", "cap", "tee"]


async def test_malformed_data_fails_the_handlers(projection, store, shop):
    broken = Event(type="OrderPlaced", source="orders", data={"order_id": "no-items"})
    with pytest.raises(PoisonEvent):  # dead-lettered at once: no retry can fix it
        await projection.apply(broken)
    with pytest.raises(ValidationError):  # the consumer then retries the batch event by event
        await projection.apply_batch([shop.placed(shop.order(("mug", 1, 1500))), broken])
    assert (await store.progress())[0] == 0
