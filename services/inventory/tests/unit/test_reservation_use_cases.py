"""The reservation use cases on SQLite memory: holding all or nothing, every step of the life,
its repeats and refusals, the release-before-reserve tombstone, and expiry."""

from datetime import UTC, datetime, timedelta

import pytest
from microshop_inventory.domain import (
    COMMIT,
    RELEASE,
    RESTOCK,
    OutOfStock,
    Reservation,
    ReservationClosed,
    ReservationMismatch,
    ReservationNotFound,
    ReservationStatus,
    UnknownSkus,
)

S = ReservationStatus
LATER = datetime.now(UTC) + timedelta(days=1)


async def test_a_reserve_holds_every_line_until_its_expiry_and_a_repeat_holds_nothing_more(shop, ttl_seconds):
    await shop.add_product("MUG", on_hand=5)
    await shop.add_product("TEA", on_hand=10)
    before = datetime.now(UTC)

    held, created = await shop.reservations.reserve("o-1", {"TEA": 4, "MUG": 2})
    assert created and held.status == S.HELD and held.lines == [("MUG", 2), ("TEA", 4)]
    ttl = timedelta(seconds=ttl_seconds)
    assert before + ttl <= held.expires_at <= datetime.now(UTC) + ttl
    assert (await shop.stock("MUG"), await shop.stock("TEA")) == ((5, 2), (10, 4))

    again, created = await shop.reservations.reserve("o-1", {"MUG": 2, "TEA": 4})
    assert not created and again == held
    assert await shop.reservations.get("o-1") == held
    assert (await shop.stock("MUG"), await shop.stock("TEA")) == ((5, 2), (10, 4))


async def test_the_same_order_with_other_items_is_refused(shop):
    await shop.add_product("MUG", on_hand=5)
    await shop.reservations.reserve("o-1", {"MUG": 2})
    for items in ({"MUG": 3}, {"MUG": 2, "TEA": 1}):
        with pytest.raises(ReservationMismatch) as refused:
            await shop.reservations.reserve("o-1", items)
        assert refused.value.reservation_status == "HELD"
    assert await shop.stock("MUG") == (5, 2)


async def test_a_short_line_holds_and_records_nothing(shop):
    await shop.add_product("MUG", on_hand=5)
    await shop.add_product("TEA", on_hand=1)
    await shop.add_product("PEN", on_hand=3)
    with pytest.raises(OutOfStock) as refused:
        await shop.reservations.reserve("o-1", {"MUG": 2, "TEA": 2, "PEN": 4})
    assert refused.value.skus == ["PEN", "TEA"]
    assert [await shop.stock(sku) for sku in ("MUG", "TEA", "PEN")] == [(5, 0), (1, 0), (3, 0)]
    assert await shop.reservations.find("o-1") is None

    await shop.catalog.set_stock("TEA", 2)
    await shop.catalog.set_stock("PEN", 4)
    _, created = await shop.reservations.reserve("o-1", {"MUG": 2, "TEA": 2, "PEN": 4})
    assert created and await shop.stock("PEN") == (4, 4)


async def test_unknown_skus_hold_nothing(shop):
    await shop.add_product("MUG", on_hand=5)
    with pytest.raises(UnknownSkus) as refused:
        await shop.reservations.reserve("o-1", {"MUG": 1, "GHOST": 1, "ALSO-GONE": 2})
    assert refused.value.skus == ["ALSO-GONE", "GHOST"]
    assert await shop.stock("MUG") == (5, 0)
    assert await shop.reservations.find("o-1") is None


async def test_commit_sells_and_restock_returns_each_once(shop):
    await shop.add_product("MUG", on_hand=5)
    await shop.reservations.reserve("o-1", {"MUG": 2})

    for _ in range(2):
        committed = await shop.reservations.commit("o-1")
        assert committed.status == S.COMMITTED and committed.lines == [("MUG", 2)]
        level = await shop.level("MUG")
        assert (level.on_hand, level.reserved, level.received_units, level.sold_units) == (3, 0, 5, 2)

    for _ in range(2):
        assert (await shop.reservations.restock("o-1")).status == S.RESTOCKED
        level = await shop.level("MUG")
        assert (level.on_hand, level.reserved, level.received_units, level.sold_units) == (5, 0, 5, 0)

    assert (await shop.reservations.commit("o-1")).status == S.RESTOCKED  # a late repeat sells nothing
    assert (await shop.level("MUG")).sold_units == 0


async def test_release_gives_units_back_and_a_repeated_reserve_answers_with_it(shop):
    await shop.add_product("MUG", on_hand=5)
    await shop.reservations.reserve("o-1", {"MUG": 2})
    released = await shop.reservations.release("o-1")
    assert released.status == S.RELEASED and released.lines == [("MUG", 2)]
    assert await shop.reservations.release("o-1") == released
    assert await shop.stock("MUG") == (5, 0)

    replay, created = await shop.reservations.reserve("o-1", {"MUG": 2})
    assert not created and replay.status == S.RELEASED
    assert await shop.stock("MUG") == (5, 0)


async def _reservation_in(shop, status: ReservationStatus) -> str:
    """An order whose reservation of one MUG is in ``status``."""
    order_id = f"o-{status}"
    await shop.reservations.reserve(order_id, {"MUG": 1})
    if status in (S.COMMITTED, S.RESTOCKED):
        await shop.reservations.commit(order_id)
    if status == S.RESTOCKED:
        await shop.reservations.restock(order_id)
    if status == S.RELEASED:
        await shop.reservations.release(order_id)
    if status == S.EXPIRED:
        await shop.reservations.expire_overdue(now=LATER)
    assert (await shop.reservations.get(order_id)).status == status
    return order_id


@pytest.mark.parametrize("step", [COMMIT, RELEASE, RESTOCK], ids=lambda step: step.name)
@pytest.mark.parametrize("status", list(S))
async def test_each_step_applies_repeats_unchanged_or_is_refused_by_the_table(shop, step, status):
    await shop.add_product("MUG", on_hand=5)
    order_id = await _reservation_in(shop, status)
    before = await shop.level("MUG")
    act = getattr(shop.reservations, step.name)
    outcome = step.outcome_for(status)

    if outcome == "conflict":
        with pytest.raises(step.conflict) as refused:
            await act(order_id)
        assert refused.value.reservation_status == status.value
        assert await shop.level("MUG") == before
    elif outcome == "unchanged":
        assert (await act(order_id)).status == status
        assert await shop.level("MUG") == before
    else:
        assert (await act(order_id)).status == step.target
        after = await shop.level("MUG")
        assert after.on_hand - before.on_hand == step.on_hand
        assert after.reserved - before.reserved == step.reserved
        assert after.sold_units - before.sold_units == step.sold


async def test_unknown_orders_are_not_found_except_by_release_which_leaves_a_tombstone(shop):
    for act in (shop.reservations.get, shop.reservations.commit, shop.reservations.restock):
        with pytest.raises(ReservationNotFound) as refused:
            await act("nobody")
        assert refused.value.order_id == "nobody"

    await shop.add_product("MUG", on_hand=5)
    tombstone = await shop.reservations.release("o-1")
    assert tombstone == Reservation("o-1", S.RELEASED, {}, None)
    assert await shop.reservations.release("o-1") == tombstone

    with pytest.raises(ReservationClosed) as refused:
        await shop.reservations.reserve("o-1", {"MUG": 2})
    assert refused.value.reservation_status == "RELEASED"
    assert await shop.stock("MUG") == (5, 0)
    with pytest.raises(ReservationClosed):
        await shop.reservations.commit("o-1")


async def test_expiry_takes_only_overdue_holds_in_batches_and_gives_their_units_back(shop):
    await shop.add_product("MUG", on_hand=10)
    old, _ = await shop.reservations.reserve("old", {"MUG": 2})
    await shop.reservations.reserve("committed", {"MUG": 1})
    await shop.reservations.commit("committed")

    assert await shop.reservations.expire_overdue(now=old.expires_at - timedelta(milliseconds=1)) == 0
    assert await shop.reservations.expire_overdue(now=old.expires_at) == 1
    assert (await shop.reservations.get("old")).status == S.EXPIRED
    assert (await shop.reservations.get("committed")).status == S.COMMITTED
    assert await shop.stock("MUG") == (9, 0)

    for i in range(7):
        await shop.reservations.reserve(f"o-{i}", {"MUG": 1})
    assert await shop.reservations.expire_overdue(now=LATER, batch_size=3) == 7
    assert await shop.reservations.expire_overdue(now=LATER) == 0
    assert await shop.stock("MUG") == (9, 0)


async def test_reservations_are_listed_oldest_first_by_state(shop):
    await shop.add_product("MUG", on_hand=10)
    for order_id in ("o-1", "o-2", "o-3"):
        await shop.reservations.reserve(order_id, {"MUG": 1})
    await shop.reservations.commit("o-2")

    everything, total = await shop.reservations.list(status=None, limit=100, offset=0)
    assert total == 3 and [r.order_id for r in everything] == ["o-1", "o-2", "o-3"]
    assert everything[1].lines == [("MUG", 1)]
    held, total = await shop.reservations.list(status=S.HELD, limit=1, offset=1)
    assert total == 2 and [r.order_id for r in held] == ["o-3"]
