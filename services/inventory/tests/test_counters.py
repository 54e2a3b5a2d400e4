"""Stock conservation without a baseline: received_units and sold_units, kept by the same update that
moves on_hand, so on_hand == received_units - sold_units always. Over real HTTP, SQLite and
PostgreSQL. (``inventory.stock_item`` checks that identity and available = on_hand - reserved on
every read.)"""

import asyncio
import random
from datetime import UTC, datetime, timedelta

STATUSES = ("HELD", "COMMITTED", "RELEASED", "EXPIRED", "RESTOCKED")


def problem_type(reply) -> str:
    assert reply.headers["Content-Type"].startswith("application/problem+json"), reply.headers
    return reply.body["type"].rsplit("/", 1)[-1]


async def test_setting_stock_counts_the_difference_as_received_up_or_down(inventory):
    await inventory.add_product("MUG")  # created with nothing on hand: nothing received
    assert await inventory.counters("MUG") == (0, 0)

    for on_hand, received in [(10, 10), (4, 4), (4, 4), (12, 12), (0, 0), (7, 7)]:
        reply = await inventory.admin.put("/stock/MUG", json={"on_hand": on_hand})
        assert reply.status == 200
        assert (reply.body["received_units"], reply.body["sold_units"]) == (received, 0)
        assert await inventory.counters("MUG") == (received, 0)

    # After a sale, a stock count is still new minus old on hand.
    assert (await inventory.reserve("o-1", {"MUG": 3})).status == 201
    assert (await inventory.service.post("/reservations/o-1/commit")).status == 200
    assert await inventory.stock_item("MUG") == {"sku": "MUG", "on_hand": 4, "reserved": 0, "available": 4,
                                                 "received_units": 7, "sold_units": 3}
    assert (await inventory.admin.put("/stock/MUG", json={"on_hand": 1})).status == 200  # write off 3
    assert await inventory.counters("MUG") == (4, 3)
    assert (await inventory.admin.put("/stock/MUG", json={"on_hand": 21})).status == 200  # a delivery of 20
    assert await inventory.counters("MUG") == (24, 3)

    # A refused stock count changes nothing.
    assert (await inventory.reserve("o-2", {"MUG": 5})).status == 201
    below = await inventory.admin.put("/stock/MUG", json={"on_hand": 4})
    assert below.status == 409 and problem_type(below) == "stock-below-reserved"
    assert await inventory.counters("MUG") == (24, 3)

    # Updating the catalog data leaves the counters alone.
    assert (await inventory.admin.put("/products/MUG", json={"name": "Mug", "price_cents": 1})).status == 200
    assert await inventory.stock_item("MUG") == {"sku": "MUG", "on_hand": 21, "reserved": 5, "available": 16,
                                                 "received_units": 24, "sold_units": 3}


async def test_commit_and_restock_count_once_however_often_they_are_repeated(inventory):
    await inventory.add_product("MUG", on_hand=10)
    await inventory.add_product("TEA", on_hand=10)
    assert (await inventory.reserve("o-1", {"MUG": 2, "TEA": 3})).status == 201
    assert await inventory.counters("MUG") == (10, 0)  # holding is not selling

    for _ in range(3):  # the first commit sells; repeats answer 200 unchanged
        commit = await inventory.service.post("/reservations/o-1/commit")
        assert commit.status == 200 and commit.body["status"] == "COMMITTED"
        assert await inventory.stock_item("MUG") == {"sku": "MUG", "on_hand": 8, "reserved": 0, "available": 8,
                                                     "received_units": 10, "sold_units": 2}
        assert await inventory.counters("TEA") == (10, 3)

    for _ in range(3):  # the cancelled order's units come back once
        restock = await inventory.service.post("/reservations/o-1/restock")
        assert restock.status == 200 and restock.body["status"] == "RESTOCKED"
        assert await inventory.stock_item("MUG") == {"sku": "MUG", "on_hand": 10, "reserved": 0, "available": 10,
                                                     "received_units": 10, "sold_units": 0}
        assert await inventory.counters("TEA") == (10, 0)

    # A commit arriving after the restock is a repeat too: it sells nothing again.
    late = await inventory.service.post("/reservations/o-1/commit")
    assert late.status == 200 and late.body["status"] == "RESTOCKED"
    assert await inventory.counters("MUG") == (10, 0)


async def test_concurrent_twins_of_a_commit_or_a_restock_count_once(inventory):
    await inventory.add_product("MUG", on_hand=10)
    assert (await inventory.reserve("o-1", {"MUG": 4})).status == 201
    commits = await asyncio.gather(*(inventory.service.post("/reservations/o-1/commit") for _ in range(6)))
    assert {r.status for r in commits} == {200}
    assert await inventory.counters("MUG") == (10, 4)
    restocks = await asyncio.gather(*(inventory.service.post("/reservations/o-1/restock") for _ in range(6)))
    assert {r.status for r in restocks} == {200}
    assert await inventory.counters("MUG") == (10, 0)


async def test_release_and_expiry_sell_nothing(inventory):
    await inventory.add_product("MUG", on_hand=5)
    assert (await inventory.reserve("released", {"MUG": 2})).status == 201
    old = await inventory.reserve("expired", {"MUG": 1})
    for _ in range(2):
        assert (await inventory.service.post("/reservations/released/release")).status == 200
    assert await inventory.stock_item("MUG") == {"sku": "MUG", "on_hand": 5, "reserved": 1, "available": 4,
                                                 "received_units": 5, "sold_units": 0}

    assert await inventory.reservations.expire_overdue(now=datetime.fromisoformat(old.body["expires_at"])) == 1
    assert await inventory.stock_item("MUG") == {"sku": "MUG", "on_hand": 5, "reserved": 0, "available": 5,
                                                 "received_units": 5, "sold_units": 0}
    # Refused steps on closed reservations change nothing either.
    assert (await inventory.service.post("/reservations/expired/commit")).status == 409
    assert (await inventory.service.post("/reservations/released/restock")).status == 409
    assert (await inventory.service.post("/reservations/never-reserved/release")).status == 200  # tombstone
    assert await inventory.counters("MUG") == (5, 0)


async def test_a_random_mix_of_operations_conserves_stock(inventory):
    """A small model-based run: random stock counts, reserves, commits, releases, restocks and
    expiries (with repeats), checked against a plain Python model after every step."""
    rng = random.Random(20261124)
    skus = ["A", "B", "C"]
    model = {sku: {"on_hand": 0, "reserved": 0, "received": 0, "sold": 0} for sku in skus}
    status: dict[str, str] = {}
    lines: dict[str, dict[str, int]] = {}
    for sku in skus:
        await inventory.add_product(sku)

    def move(order_id: str, on_hand: int, reserved: int, sold: int) -> None:
        for sku, q in lines[order_id].items():
            model[sku]["on_hand"] += on_hand * q
            model[sku]["reserved"] += reserved * q
            model[sku]["sold"] += sold * q

    for step in range(80):
        action = rng.choice(["stock", "reserve", "reserve", "commit", "commit", "release", "restock", "expire"])
        orders = sorted(status)
        if action == "stock":
            sku = rng.choice(skus)
            target = rng.randint(0, 12)
            reply = await inventory.admin.put(f"/stock/{sku}", json={"on_hand": target})
            if target >= model[sku]["reserved"]:
                assert reply.status == 200, reply.body
                model[sku]["received"] += target - model[sku]["on_hand"]
                model[sku]["on_hand"] = target
            else:
                assert reply.status == 409, reply.body
        elif action == "reserve":
            order_id = f"o-{step}"
            items = {sku: rng.randint(1, 3) for sku in rng.sample(skus, rng.randint(1, 2))}
            reply = await inventory.reserve(order_id, items)
            fits = all(model[s]["on_hand"] - model[s]["reserved"] >= q for s, q in items.items())
            assert reply.status == (201 if fits else 409), reply.body
            if fits:
                status[order_id], lines[order_id] = "HELD", items
                move(order_id, 0, +1, 0)
        elif action == "expire" and orders:
            held = [o for o in orders if status[o] == "HELD"]
            later = datetime.now(UTC) + timedelta(days=1)
            assert await inventory.reservations.expire_overdue(now=later) == len(held)
            for order_id in held:
                status[order_id] = "EXPIRED"
                move(order_id, 0, -1, 0)
        elif orders:
            order_id = rng.choice(orders)
            reply = await inventory.service.post(f"/reservations/{order_id}/{action}")
            before = status[order_id]
            if action == "commit" and before == "HELD":
                status[order_id] = "COMMITTED"
                move(order_id, -1, -1, +1)
            elif action == "release" and before == "HELD":
                status[order_id] = "RELEASED"
                move(order_id, 0, -1, 0)
            elif action == "restock" and before == "COMMITTED":
                status[order_id] = "RESTOCKED"
                move(order_id, +1, 0, -1)
            if reply.status == 200:
                assert reply.body["status"] == status[order_id], (action, before, reply.body)
            else:
                assert reply.status == 409 and status[order_id] == before, (action, before, reply.body)

        for sku in skus:
            item = await inventory.stock_item(sku)
            expected = model[sku]
            assert (item["on_hand"], item["reserved"], item["received_units"], item["sold_units"]) == (
                expected["on_hand"], expected["reserved"], expected["received"], expected["sold"]
            ), (step, action, sku)

    summary = (await inventory.admin.get("/stock/summary")).body
    assert summary["received_units"] - summary["sold_units"] == summary["on_hand"]
    assert summary["sold_units"] == sum(
        q for order_id, items in lines.items() if status[order_id] == "COMMITTED" for q in items.values()
    )
    assert summary["reservations_by_status"] == {s: list(status.values()).count(s) for s in STATUSES}


async def test_summary_totals_stock_and_counts_reservations_by_state(inventory):
    empty = await inventory.admin.get("/stock/summary")
    assert empty.status == 200
    assert empty.body == {"skus": 0, "on_hand": 0, "reserved": 0, "received_units": 0, "sold_units": 0,
                          "reservations_by_status": dict.fromkeys(STATUSES, 0), "min_available": None}

    await inventory.add_product("MUG", on_hand=10)
    await inventory.add_product("TEA", on_hand=6)
    await inventory.add_product("summary", on_hand=2)  # a sku named like the route does not shadow it
    await inventory.reserve("held", {"MUG": 1, "TEA": 5})
    await inventory.reserve("committed", {"MUG": 3})
    await inventory.service.post("/reservations/committed/commit")
    await inventory.reserve("restocked", {"MUG": 2})
    await inventory.service.post("/reservations/restocked/commit")
    await inventory.service.post("/reservations/restocked/restock")
    await inventory.reserve("released", {"MUG": 1})
    await inventory.service.post("/reservations/released/release")
    await inventory.service.post("/reservations/tombstone/release")

    summary = await inventory.admin.get("/stock/summary")
    assert summary.status == 200
    # MUG: 10 received, 3 sold, 7 on hand, 1 held. TEA: 6 received, 5 held. summary: 2 received.
    assert summary.body == {
        "skus": 3, "on_hand": 15, "reserved": 6, "received_units": 18, "sold_units": 3,
        "reservations_by_status": {"HELD": 1, "COMMITTED": 1, "RELEASED": 2, "EXPIRED": 0, "RESTOCKED": 1},
        "min_available": 1,  # TEA: 6 - 5
    }

    # Quiet again: nothing reserved, nothing HELD.
    await inventory.service.post("/reservations/held/release")
    quiet = (await inventory.admin.get("/stock/summary")).body
    assert quiet["reserved"] == 0 and quiet["reservations_by_status"]["HELD"] == 0
    assert quiet["min_available"] == 2  # the sku "summary"

    for caller, expected in ((inventory.customer, 403), (inventory.service, 403), (inventory.anonymous, 401)):
        refused = await caller.get("/stock/summary")
        assert refused.status == expected and problem_type(refused) in ("forbidden", "unauthorized")
