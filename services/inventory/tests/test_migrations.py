"""Migration 0002 on a database left at 0001 with stock and reservations in it: the counters are
backfilled so that on_hand == received_units - sold_units, on SQLite and PostgreSQL."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.config import Config
from microshop_chassis.db import Database
from microshop_inventory.models import products, reservation_lines, reservations
from sqlalchemy import insert, text, update
from sqlalchemy.exc import IntegrityError

SCRIPT_LOCATION = "microshop_inventory:migrations"


async def upgrade(url: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    await asyncio.to_thread(command.upgrade, config, revision)  # env.py runs its own event loop


async def test_0002_backfills_sold_from_committed_reservations_and_received_from_on_hand(
    database_url, settings, serve
):
    await upgrade(database_url, "0001")
    now = datetime.now(UTC)
    db = Database(database_url)
    # Written with the 0001 columns only (the tables as they were then).
    async with db.transaction() as session:
        await session.execute(insert(products), [
            {"sku": sku, "name": sku, "description": "", "price_cents": 100, "currency": "USD",
             "on_hand": on_hand, "reserved": reserved, "updated_at": now}
            for sku, on_hand, reserved in [("MUG", 7, 1), ("TEA", 0, 0), ("PEN", 4, 0)]
        ])
        await session.execute(insert(reservations), [
            {"order_id": order_id, "status": status, "expires_at": now + timedelta(days=1), "created_at": now,
             "updated_at": now}
            for order_id, status in [("c-1", "COMMITTED"), ("c-2", "COMMITTED"), ("r-1", "RESTOCKED"),
                                     ("h-1", "HELD"), ("x-1", "RELEASED"), ("e-1", "EXPIRED")]
        ])
        await session.execute(insert(reservation_lines), [
            {"order_id": order_id, "sku": sku, "quantity": q}
            for order_id, sku, q in [("c-1", "MUG", 2), ("c-1", "TEA", 5), ("c-2", "MUG", 1),
                                     ("r-1", "MUG", 9), ("h-1", "MUG", 1), ("x-1", "PEN", 3), ("e-1", "PEN", 1)]
        ])
    await db.dispose()

    await upgrade(database_url, "head")

    # The service starts on it (nothing left to migrate) and reports the backfilled counters.
    async with serve(settings) as inventory:
        assert await inventory.stock_item("MUG") == {"sku": "MUG", "on_hand": 7, "reserved": 1, "available": 6,
                                                     "received_units": 10, "sold_units": 3}
        assert await inventory.counters("TEA") == (5, 5)
        assert await inventory.counters("PEN") == (4, 0)  # released and expired lines sold nothing
        summary = (await inventory.admin.get("/stock/summary")).body
        assert summary["received_units"] == 19 and summary["sold_units"] == 8 and summary["on_hand"] == 11
        assert summary["reservations_by_status"] == {"HELD": 1, "COMMITTED": 2, "RELEASED": 1, "EXPIRED": 1,
                                                     "RESTOCKED": 1}

        # And keeps them from there on.
        assert (await inventory.service.post("/reservations/h-1/commit")).status == 200
        assert (await inventory.service.post("/reservations/c-1/restock")).status == 200
        assert await inventory.counters("MUG") == (10, 2)
        assert await inventory.counters("TEA") == (5, 0)

    # The database itself refuses a row that breaks conservation, and still refuses over-holding.
    db = Database(database_url)
    try:
        for values in ({"received_units": 99}, {"sold_units": -1, "received_units": 3}, {"reserved": 50}):
            with pytest.raises(IntegrityError):
                async with db.transaction() as session:
                    await session.execute(update(products).where(products.c.sku == "PEN").values(**values))
        async with db.session() as session:
            version = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert version == "0002"
    finally:
        await db.dispose()


async def test_0002_downgrades_to_0001(database_url):
    await upgrade(database_url, "head")
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    await asyncio.to_thread(command.downgrade, config, "0001")
    db = Database(database_url)
    try:
        async with db.session() as session:
            version = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
            columns = (await session.execute(text("SELECT * FROM products"))).keys()
        assert version == "0001" and "sold_units" not in columns and "received_units" not in columns
    finally:
        await db.dispose()
    await upgrade(database_url, "head")  # and up again
