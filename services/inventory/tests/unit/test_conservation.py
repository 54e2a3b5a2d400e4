"""Stock conservation under a random mix of use cases: stock counts, reserves, commits, releases,
restocks and expiries (repeats included), checked against a plain model after every step, and
on_hand == received_units - sold_units throughout (``shop.levels`` checks that on every read)."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from microshop_inventory.domain import OutOfStock, ReservationStateError, ReservationStatus, StockBelowReserved

S = ReservationStatus
SKUS = ("A", "B", "C")
# Written out here rather than read from domain.py, so the model does not share the code's mistakes:
# action -> (the state it applies to, the state it leads to, the signs moving on_hand, reserved, sold).
APPLIES = {
    "commit": (S.HELD, S.COMMITTED, (-1, -1, +1)),
    "release": (S.HELD, S.RELEASED, (0, -1, 0)),
    "restock": (S.COMMITTED, S.RESTOCKED, (+1, 0, -1)),
}
# The states that answer a repeat unchanged; any other state refuses.
REPEATS = {"commit": {S.COMMITTED, S.RESTOCKED}, "release": {S.RELEASED, S.EXPIRED}, "restock": {S.RESTOCKED}}


@pytest.mark.parametrize("seed", [1, 20261124])
async def test_a_random_mix_of_use_cases_conserves_stock(shop, seed):
    rng = random.Random(seed)
    model = {sku: {"on_hand": 0, "reserved": 0, "received": 0, "sold": 0} for sku in SKUS}
    status: dict[str, S] = {}
    lines: dict[str, dict[str, int]] = {}
    for sku in SKUS:
        await shop.add_product(sku)

    def move(order_id: str, on_hand: int, reserved: int, sold: int) -> None:
        for sku, q in lines[order_id].items():
            model[sku]["on_hand"] += on_hand * q
            model[sku]["reserved"] += reserved * q
            model[sku]["sold"] += sold * q

    for n in range(120):
        action = rng.choice(["stock", "reserve", "reserve", "commit", "commit", "release", "restock", "expire"])
        if action == "stock":
            sku, target = rng.choice(SKUS), rng.randint(0, 12)
            try:
                await shop.catalog.set_stock(sku, target)
            except StockBelowReserved:
                assert target < model[sku]["reserved"]
            else:
                model[sku]["received"] += target - model[sku]["on_hand"]
                model[sku]["on_hand"] = target
        elif action == "reserve":
            order_id = f"o-{n}"
            items = {sku: rng.randint(1, 3) for sku in rng.sample(SKUS, rng.randint(1, 2))}
            fits = all(model[s]["on_hand"] - model[s]["reserved"] >= q for s, q in items.items())
            try:
                await shop.reservations.reserve(order_id, items)
            except OutOfStock:
                assert not fits
            else:
                assert fits
                status[order_id], lines[order_id] = S.HELD, items
                move(order_id, 0, +1, 0)
        elif action == "expire":
            expired = await shop.reservations.expire_overdue(now=datetime.now(UTC) + timedelta(days=1))
            held = [order_id for order_id, state in status.items() if state == S.HELD]
            assert expired == len(held)
            for order_id in held:
                status[order_id] = S.EXPIRED
                move(order_id, 0, -1, 0)
        elif status:
            order_id = rng.choice(sorted(status))
            before = status[order_id]
            source, target, signs = APPLIES[action]
            try:
                answer = await getattr(shop.reservations, action)(order_id)
            except ReservationStateError:
                assert before != source and before not in REPEATS[action], (action, before)
            else:
                if before == source:
                    status[order_id] = target
                    move(order_id, *signs)
                else:
                    assert before in REPEATS[action], (action, before)
                assert answer.status == status[order_id]

        levels = await shop.levels()
        for sku, expected in model.items():
            level = levels[sku]
            assert (level.on_hand, level.reserved, level.received_units, level.sold_units) == (
                expected["on_hand"], expected["reserved"], expected["received"], expected["sold"]), (n, action)

    summary = await shop.catalog.stock_summary()
    assert summary.on_hand == summary.received_units - summary.sold_units
    assert summary.sold_units == sum(sum(lines[o].values()) for o, s in status.items() if s == S.COMMITTED)
    assert summary.reservations_by_status == {s: list(status.values()).count(s) for s in S}
