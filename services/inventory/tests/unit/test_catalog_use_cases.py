"""The catalog and stock use cases on SQLite memory."""

import pytest
from microshop_inventory.domain import (
    Product,
    ProductInfo,
    ProductNotFound,
    ReservationStatus,
    StockBelowReserved,
    StockLevel,
)


async def test_a_new_product_has_nothing_on_hand_and_an_update_leaves_stock_alone(shop):
    created, is_new = await shop.catalog.put_product("MUG", ProductInfo("Blue mug", "Holds 300 ml.", 1250, "USD"))
    assert is_new
    assert created == Product("MUG", "Blue mug", "Holds 300 ml.", 1250, "USD", available=0)
    assert await shop.level("MUG") == StockLevel("MUG", on_hand=0, reserved=0, received_units=0, sold_units=0)

    await shop.catalog.set_stock("MUG", 7)
    updated, is_new = await shop.catalog.put_product("MUG", ProductInfo("Mug, blue", "", 1400, "EUR"))
    assert not is_new
    assert updated == Product("MUG", "Mug, blue", "", 1400, "EUR", available=7)
    assert await shop.catalog.get_product("MUG") == updated
    assert await shop.stock("MUG") == (7, 0)


async def test_an_unknown_product_is_refused_by_name(shop):
    with pytest.raises(ProductNotFound) as refused:
        await shop.catalog.get_product("NOPE")
    assert refused.value.sku == "NOPE"
    with pytest.raises(ProductNotFound):
        await shop.catalog.set_stock("NOPE", 3)


async def test_products_are_listed_by_sku_paged_and_filtered(shop):
    for sku in ("C-3", "A-1", "B-2", "D-4"):
        await shop.add_product(sku, on_hand=2)
    everything, total = await shop.catalog.list_products(skus=None, limit=100, offset=0)
    assert total == 4 and [p.sku for p in everything] == ["A-1", "B-2", "C-3", "D-4"]
    page, total = await shop.catalog.list_products(skus=None, limit=2, offset=1)
    assert total == 4 and [p.sku for p in page] == ["B-2", "C-3"]
    chosen, total = await shop.catalog.list_products(skus=["D-4", "A-1", "NOPE"], limit=100, offset=0)
    assert total == 2 and [(p.sku, p.available) for p in chosen] == [("A-1", 2), ("D-4", 2)]


async def test_a_stock_count_adds_new_minus_old_to_received_up_or_down(shop):
    await shop.add_product("MUG")
    for on_hand in (10, 4, 4, 12, 0, 7):
        level = await shop.catalog.set_stock("MUG", on_hand)
        assert level == StockLevel("MUG", on_hand=on_hand, reserved=0, received_units=on_hand, sold_units=0)
        assert level.available == on_hand

    await shop.reservations.reserve("o-1", {"MUG": 3})
    await shop.reservations.commit("o-1")
    assert await shop.catalog.set_stock("MUG", 1) == StockLevel("MUG", 1, 0, received_units=4, sold_units=3)
    assert await shop.catalog.set_stock("MUG", 21) == StockLevel("MUG", 21, 0, received_units=24, sold_units=3)


async def test_stock_is_never_set_below_what_is_reserved(shop):
    await shop.add_product("LAMP", on_hand=5)
    await shop.reservations.reserve("o-1", {"LAMP": 3})

    with pytest.raises(StockBelowReserved) as refused:
        await shop.catalog.set_stock("LAMP", 2)
    assert (refused.value.sku, refused.value.reserved) == ("LAMP", 3)
    assert await shop.level("LAMP") == StockLevel("LAMP", on_hand=5, reserved=3, received_units=5, sold_units=0)

    exact = await shop.catalog.set_stock("LAMP", 3)
    assert exact == StockLevel("LAMP", on_hand=3, reserved=3, received_units=3, sold_units=0)
    assert exact.available == 0


async def test_the_summary_totals_stock_and_counts_every_reservation_state(shop):
    empty = await shop.catalog.stock_summary()
    assert (empty.skus, empty.on_hand, empty.reserved, empty.min_available) == (0, 0, 0, None)
    assert empty.reservations_by_status == dict.fromkeys(ReservationStatus, 0)

    await shop.add_product("MUG", on_hand=10)
    await shop.add_product("TEA", on_hand=6)
    await shop.reservations.reserve("held", {"MUG": 1, "TEA": 5})
    await shop.reservations.reserve("committed", {"MUG": 3})
    await shop.reservations.commit("committed")
    await shop.reservations.release("tombstone")

    summary = await shop.catalog.stock_summary()
    assert (summary.skus, summary.on_hand, summary.reserved) == (2, 13, 6)
    assert (summary.received_units, summary.sold_units, summary.min_available) == (16, 3, 1)
    assert summary.reservations_by_status == {"HELD": 1, "COMMITTED": 1, "RELEASED": 1, "EXPIRED": 0,
                                              "RESTOCKED": 0}
