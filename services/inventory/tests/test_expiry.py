"""Reservations nobody commits or releases give their units back when they expire."""

from datetime import UTC, datetime, timedelta

from microshop_chassis.testing import wait_until


async def test_the_sweep_expires_only_overdue_reservations_and_returns_their_units(inventory):
    expire_overdue = inventory.reservations.expire_overdue
    await inventory.add_product("MUG", on_hand=5)
    await inventory.add_product("TEA", on_hand=5)
    old = await inventory.reserve("old", {"MUG": 2, "TEA": 1})
    expires_at = datetime.fromisoformat(old.body["expires_at"])
    await inventory.reserve("committed", {"MUG": 1})
    await inventory.service.post("/reservations/committed/commit")

    # Just before its expiry nothing happens.
    assert await expire_overdue(now=expires_at - timedelta(milliseconds=1)) == 0
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 4, "reserved": 2}

    await inventory.reserve("young", {"TEA": 3})  # made later: expires later
    assert await expire_overdue(now=expires_at) == 1
    assert (await inventory.service.get("/reservations/old")).body["status"] == "EXPIRED"
    assert (await inventory.service.get("/reservations/young")).body["status"] == "HELD"
    assert (await inventory.service.get("/reservations/committed")).body["status"] == "COMMITTED"
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 4, "reserved": 0}
    assert await inventory.stock("TEA") == {"sku": "TEA", "on_hand": 5, "reserved": 3}

    # Expired is final: too late to commit; a release (the saga compensating) is a no-op.
    commit = await inventory.service.post("/reservations/old/commit")
    assert commit.status == 409 and commit.body["type"].endswith("/reservation-closed")
    assert commit.body["reservation_status"] == "EXPIRED" and commit.body["status"] == 409
    release = await inventory.service.post("/reservations/old/release")
    assert release.status == 200 and release.body["status"] == "EXPIRED"
    assert await expire_overdue(now=expires_at) == 0  # a second sweep finds nothing to do
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 4, "reserved": 0}


async def test_the_sweep_works_through_many_in_batches(inventory):
    await inventory.add_product("MUG", on_hand=10)
    for i in range(7):
        await inventory.reserve(f"o-{i}", {"MUG": 1})
    later = datetime.now(UTC) + timedelta(days=1)
    assert await inventory.reservations.expire_overdue(now=later, batch_size=3) == 7
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 10, "reserved": 0}
    assert (await inventory.admin.get("/reservations", params={"status": "EXPIRED"})).body["total"] == 7


async def test_the_background_sweeper_expires_reservations_on_its_own(settings, serve):
    settings = settings.model_copy(update={"reservation_ttl_seconds": 0, "sweep_interval_seconds": 0.05})
    async with serve(settings) as inventory:
        await inventory.add_product("MUG", on_hand=3)
        held = await inventory.reserve("order-1", {"MUG": 3})
        assert held.status == 201 and held.body["status"] == "HELD"

        async def expired():
            reply = await inventory.service.get("/reservations/order-1")
            return reply.body["status"] == "EXPIRED"

        await wait_until(expired, timeout=10, what="the sweeper to expire order-1")
        assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 3, "reserved": 0}
        assert (await inventory.anonymous.get("/products/MUG")).body["available"] == 3
