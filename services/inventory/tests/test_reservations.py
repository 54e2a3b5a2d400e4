"""Stock reservations as orders uses them, over real HTTP, on SQLite and PostgreSQL."""

import asyncio
from datetime import UTC, datetime, timedelta

PROBLEM_JSON = "application/problem+json"


def problem_type(reply) -> str:
    assert reply.headers["Content-Type"].startswith(PROBLEM_JSON), reply.headers
    return reply.body["type"].rsplit("/", 1)[-1]


async def test_reserve_holds_every_line_and_repeating_it_holds_nothing_more(inventory):
    await inventory.add_product("MUG", on_hand=5)
    await inventory.add_product("TEA", on_hand=10)
    before = datetime.now(UTC)

    held = await inventory.reserve("order-1", {"TEA": 4, "MUG": 2})
    assert held.status == 201
    assert held.body["order_id"] == "order-1" and held.body["status"] == "HELD"
    assert held.body["items"] == [{"sku": "MUG", "quantity": 2}, {"sku": "TEA", "quantity": 4}]
    expires_at = datetime.fromisoformat(held.body["expires_at"])
    ttl = timedelta(seconds=inventory.settings.reservation_ttl_seconds)
    assert before + ttl <= expires_at <= datetime.now(UTC) + ttl

    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 5, "reserved": 2}
    assert await inventory.stock("TEA") == {"sku": "TEA", "on_hand": 10, "reserved": 4}
    assert (await inventory.anonymous.get("/products/TEA")).body["available"] == 6

    # A retry (orders lost the reply) answers with the same reservation and holds nothing more.
    again = await inventory.reserve("order-1", {"MUG": 2, "TEA": 4})
    assert again.status == 200 and again.body == held.body
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 5, "reserved": 2}
    assert (await inventory.service.get("/reservations/order-1")).body == held.body


async def test_concurrent_twins_of_one_reserve_hold_once(inventory):
    await inventory.add_product("MUG", on_hand=5)
    replies = await asyncio.gather(*(inventory.reserve("order-1", {"MUG": 2}) for _ in range(5)))
    assert sorted(r.status for r in replies) == [200, 200, 200, 200, 201]
    assert {r.body["status"] for r in replies} == {"HELD"}
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 5, "reserved": 2}


async def test_the_same_order_with_other_items_is_a_409_mismatch(inventory):
    await inventory.add_product("MUG", on_hand=5)
    assert (await inventory.reserve("order-1", {"MUG": 2})).status == 201
    for items in ({"MUG": 3}, {"MUG": 2, "TEA": 1}):
        reply = await inventory.reserve("order-1", items)
        assert reply.status == 409 and problem_type(reply) == "reservation-mismatch"
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 5, "reserved": 2}


async def test_out_of_stock_holds_and_records_nothing(inventory):
    await inventory.add_product("MUG", on_hand=5)
    await inventory.add_product("TEA", on_hand=1)
    await inventory.add_product("PEN", on_hand=3)

    short = await inventory.reserve("order-1", {"MUG": 2, "TEA": 2, "PEN": 4})
    assert short.status == 409 and problem_type(short) == "out-of-stock"
    assert short.body["skus"] == ["PEN", "TEA"]
    # All or nothing: MUG, which had enough, is not held either, and no reservation exists.
    for sku, on_hand in (("MUG", 5), ("TEA", 1), ("PEN", 3)):
        assert await inventory.stock(sku) == {"sku": sku, "on_hand": on_hand, "reserved": 0}
    assert (await inventory.service.get("/reservations/order-1")).status == 404

    # Since nothing was recorded, the same order may try again once there is stock.
    await inventory.admin.put("/stock/TEA", json={"on_hand": 2})
    await inventory.admin.put("/stock/PEN", json={"on_hand": 4})
    assert (await inventory.reserve("order-1", {"MUG": 2, "TEA": 2, "PEN": 4})).status == 201
    assert (await inventory.anonymous.get("/products/PEN")).body["available"] == 0


async def test_unknown_sku_is_422_and_holds_nothing(inventory):
    await inventory.add_product("MUG", on_hand=5)
    reply = await inventory.reserve("order-1", {"MUG": 1, "GHOST": 1, "ALSO-GONE": 2})
    assert reply.status == 422 and problem_type(reply) == "unknown-sku"
    assert reply.body["skus"] == ["ALSO-GONE", "GHOST"]
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 5, "reserved": 0}
    assert (await inventory.service.get("/reservations/order-1")).status == 404


async def test_reservation_bodies_are_validated(inventory):
    await inventory.add_product("MUG", on_hand=500)
    cases = [
        {"items": []},
        {"items": [{"sku": "MUG", "quantity": 0}]},
        {"items": [{"sku": "MUG", "quantity": 1.5}]},
        {"items": [{"sku": "MUG", "quantity": 1}, {"sku": "MUG", "quantity": 2}]},
        {"items": [{"sku": f"S{i}", "quantity": 1} for i in range(101)]},
        {"items": [{"sku": "", "quantity": 1}]},
        {},
    ]
    for body in cases:
        reply = await inventory.service.put("/reservations/order-1", json=body)
        assert reply.status == 422 and problem_type(reply) == "validation-error", body
        assert reply.body["errors"], body
    assert (await inventory.service.put("/reservations/bad%20id", json={"items": [{"sku": "MUG", "quantity": 1}]})
            ).status == 422
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 500, "reserved": 0}


async def test_commit_sells_units_then_restock_returns_them(inventory):
    await inventory.add_product("MUG", on_hand=5)
    await inventory.reserve("order-1", {"MUG": 2})

    committed = await inventory.service.post("/reservations/order-1/commit")
    assert committed.status == 200 and committed.body["status"] == "COMMITTED"
    assert committed.body["items"] == [{"sku": "MUG", "quantity": 2}]
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 3, "reserved": 0}

    again = await inventory.service.post("/reservations/order-1/commit")
    assert again.status == 200 and again.body == committed.body
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 3, "reserved": 0}

    release = await inventory.service.post("/reservations/order-1/release")
    assert release.status == 409 and problem_type(release) == "reservation-committed"
    assert release.body["reservation_status"] == "COMMITTED"

    restocked = await inventory.service.post("/reservations/order-1/restock")
    assert restocked.status == 200 and restocked.body["status"] == "RESTOCKED"
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 5, "reserved": 0}

    for action in ("restock", "commit"):  # late repeats change nothing
        late = await inventory.service.post(f"/reservations/order-1/{action}")
        assert late.status == 200 and late.body["status"] == "RESTOCKED", action
    late_release = await inventory.service.post("/reservations/order-1/release")
    assert late_release.status == 409 and late_release.body["reservation_status"] == "RESTOCKED"
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 5, "reserved": 0}


async def test_release_gives_units_back_and_closes_the_reservation(inventory):
    await inventory.add_product("MUG", on_hand=5)
    await inventory.reserve("order-1", {"MUG": 2})

    released = await inventory.service.post("/reservations/order-1/release")
    assert released.status == 200 and released.body["status"] == "RELEASED"
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 5, "reserved": 0}

    again = await inventory.service.post("/reservations/order-1/release")
    assert again.status == 200 and again.body == released.body
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 5, "reserved": 0}

    commit = await inventory.service.post("/reservations/order-1/commit")
    assert commit.status == 409 and problem_type(commit) == "reservation-closed"
    assert commit.body["reservation_status"] == "RELEASED"
    restock = await inventory.service.post("/reservations/order-1/restock")
    assert restock.status == 409 and problem_type(restock) == "reservation-not-committed"

    # A repeated reserve answers with the reservation as it is now, and holds nothing.
    replay = await inventory.reserve("order-1", {"MUG": 2})
    assert replay.status == 200 and replay.body["status"] == "RELEASED"
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 5, "reserved": 0}


async def test_restock_needs_a_committed_reservation(inventory):
    await inventory.add_product("MUG", on_hand=5)
    await inventory.reserve("order-1", {"MUG": 2})
    reply = await inventory.service.post("/reservations/order-1/restock")
    assert reply.status == 409 and problem_type(reply) == "reservation-not-committed"
    assert reply.body["reservation_status"] == "HELD"
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 5, "reserved": 2}


async def test_unknown_orders_are_404_except_release(inventory):
    for method, path in [("GET", "/reservations/nobody"), ("POST", "/reservations/nobody/commit"),
                         ("POST", "/reservations/nobody/restock")]:
        reply = await inventory.service.request(method, path)
        assert reply.status == 404 and problem_type(reply) == "reservation-not-found", path
    assert (await inventory.admin.get("/reservations")).body["total"] == 0


async def test_release_before_reserve_leaves_a_tombstone_so_a_late_reserve_holds_nothing(inventory):
    await inventory.add_product("MUG", on_hand=5)

    released = await inventory.service.post("/reservations/order-1/release")
    assert released.status == 200
    assert released.body == {"order_id": "order-1", "status": "RELEASED", "items": [], "expires_at": None}
    assert (await inventory.service.post("/reservations/order-1/release")).body == released.body

    late = await inventory.reserve("order-1", {"MUG": 2})
    assert late.status == 409 and problem_type(late) == "reservation-closed"
    assert late.body["reservation_status"] == "RELEASED"
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 5, "reserved": 0}
    commit = await inventory.service.post("/reservations/order-1/commit")
    assert commit.status == 409 and problem_type(commit) == "reservation-closed"


async def test_thirty_concurrent_orders_for_ten_units_hold_exactly_ten(inventory):
    await inventory.add_product("LAST-TEN", on_hand=10)
    replies = await asyncio.gather(*(inventory.reserve(f"order-{i}", {"LAST-TEN": 1}) for i in range(30)))

    statuses = [r.status for r in replies]
    assert statuses.count(201) == 10 and statuses.count(409) == 20, statuses
    assert all(problem_type(r) == "out-of-stock" for r in replies if r.status == 409)
    assert await inventory.stock("LAST-TEN") == {"sku": "LAST-TEN", "on_hand": 10, "reserved": 10}
    held = await inventory.admin.get("/reservations", params={"status": "HELD"})
    assert held.body["total"] == 10
    assert {r["order_id"] for r in held.body["items"]} == {r.body["order_id"] for r in replies if r.status == 201}
    assert (await inventory.admin.get("/reservations")).body["total"] == 10  # the refused ones left no record


async def test_concurrent_commits_releases_and_reserves_keep_the_counts_exact(inventory):
    await inventory.add_product("A", on_hand=40)
    await inventory.add_product("B", on_hand=40)
    for i in range(20):
        assert (await inventory.reserve(f"o-{i}", {"A": 1, "B": 1})).status == 201
    # Committing half, releasing the other half and reserving more, all at once, in both sku orders.
    calls = [inventory.service.post(f"/reservations/o-{i}/{'commit' if i % 2 else 'release'}") for i in range(20)]
    calls += [inventory.reserve(f"n-{i}", {"B": 1, "A": 1}) for i in range(20)]
    replies = await asyncio.gather(*calls)
    assert all(r.status in (200, 201) for r in replies), [r.body for r in replies if r.status >= 300]
    # 10 sold; 20 new ones held.
    for sku in ("A", "B"):
        assert await inventory.stock(sku) == {"sku": sku, "on_hand": 30, "reserved": 20}


async def test_operators_list_reservations_by_status(inventory):
    await inventory.add_product("MUG", on_hand=10)
    for order_id in ("o-1", "o-2", "o-3"):
        await inventory.reserve(order_id, {"MUG": 1})
    await inventory.service.post("/reservations/o-2/commit")

    everything = await inventory.admin.get("/reservations")
    assert everything.status == 200 and everything.body["total"] == 3
    assert [r["order_id"] for r in everything.body["items"]] == ["o-1", "o-2", "o-3"]
    assert everything.body["items"][1]["items"] == [{"sku": "MUG", "quantity": 1}]

    held = await inventory.admin.get("/reservations", params={"status": "HELD", "limit": 1, "offset": 1})
    assert held.body["total"] == 2 and [r["order_id"] for r in held.body["items"]] == ["o-3"]
    committed = await inventory.admin.get("/reservations", params={"status": "COMMITTED"})
    assert [(r["order_id"], r["status"]) for r in committed.body["items"]] == [("o-2", "COMMITTED")]
