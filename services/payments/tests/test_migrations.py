"""The schema's migrations on SQLite and PostgreSQL: upgrading keeps the payments already there."""

import asyncio
from datetime import UTC, datetime

from alembic import command
from alembic.config import Config
from microshop_chassis.db import Database
from sqlalchemy import text

SCRIPTS = "microshop_payments:migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPTS)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def test_upgrading_from_0001_keeps_existing_payments(database_url):
    # Alembic's env.py runs its own event loop: a worker thread, as Database.migrate does.
    await asyncio.to_thread(command.upgrade, alembic_config(database_url), "0001")
    db = Database(database_url)
    now = datetime.now(UTC)
    try:
        async with db.engine.begin() as conn:
            for order_id, status, charge_id in (("o-1", "CAPTURED", "ch_1"), ("o-2", "DECLINED", "ch_2")):
                await conn.execute(text(
                    "INSERT INTO payments (id, order_id, customer_id, amount_cents, currency, status,"
                    " processor_charge_id, created_at, updated_at)"
                    " VALUES (:id, :order_id, 'c-1', 1234, 'USD', :status, :charge_id, :now, :now)"),
                    {"id": f"p-{order_id}", "order_id": order_id, "status": status, "charge_id": charge_id,
                     "now": now})
            await conn.execute(text(
                "INSERT INTO ledger_entries (id, payment_id, kind, amount_cents, created_at)"
                " VALUES ('l-1', 'p-o-1', 'CAPTURE', 1234, :now)"), {"now": now})

        await db.migrate(SCRIPTS)  # what the service does at start

        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar() == "0003"
            assert (await conn.execute(text("SELECT COUNT(*) FROM card_uses"))).scalar() == 0  # 0003
            rows = (await conn.execute(text(
                "SELECT order_id, status, amount_cents, processor_charge_id, idempotency_key FROM payments"
                " ORDER BY order_id"))).all()
            assert [tuple(r) for r in rows] == [("o-1", "CAPTURED", 1234, "ch_1", None),
                                               ("o-2", "DECLINED", 1234, "ch_2", None)]
            assert (await conn.execute(text("SELECT COUNT(*) FROM ledger_entries"))).scalar() == 1
        async with db.engine.begin() as conn:  # an intent, as 0002 allows
            await conn.execute(text(
                "INSERT INTO payments (id, order_id, customer_id, amount_cents, currency, status,"
                " idempotency_key, created_at, updated_at)"
                " VALUES ('p-o-3', 'o-3', 'c-1', 500, 'USD', 'PENDING', :key, :now, :now)"),
                {"key": "order-o-3-" + "k" * 240, "now": now})
    finally:
        await db.dispose()

    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0001")  # and back
    db = Database(database_url)
    try:
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT COUNT(*) FROM payments"))).scalar() == 3
    finally:
        await db.dispose()
