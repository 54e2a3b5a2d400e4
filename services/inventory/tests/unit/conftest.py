"""inventory's use cases on its real tables in SQLite memory: no server, no process, milliseconds.
inventory calls no other service, so its own database is the only thing to stand in for."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from microshop_chassis.testing import memory_database
from microshop_inventory.domain import ProductInfo, StockLevel
from microshop_inventory.models import Base
from microshop_inventory.service import Catalog, Reservations

TTL_SECONDS = 600


@dataclass
class Shop:
    """Both use cases over one database, and the shortcuts the tests share."""

    catalog: Catalog
    reservations: Reservations

    async def add_product(self, sku: str, *, on_hand: int = 0, price_cents: int = 1250) -> None:
        await self.catalog.put_product(sku, ProductInfo(f"Product {sku}", "", price_cents, "USD"))
        if on_hand:
            await self.catalog.set_stock(sku, on_hand)

    async def stock(self, sku: str) -> tuple[int, int]:
        """``(on_hand, reserved)`` (see ``levels``)."""
        level = await self.level(sku)
        return level.on_hand, level.reserved

    async def level(self, sku: str) -> StockLevel:
        return (await self.levels())[sku]

    async def levels(self) -> dict[str, StockLevel]:
        """Every sku's stock, after checking what must always hold of each."""
        levels, _ = await self.catalog.list_stock(limit=1000, offset=0)
        for level in levels:
            assert 0 <= level.reserved <= level.on_hand, level
            assert level.on_hand == level.received_units - level.sold_units and level.sold_units >= 0, level
        return {level.sku: level for level in levels}


@pytest.fixture
async def db():
    database = await memory_database(Base.metadata)
    yield database
    await database.dispose()


@pytest.fixture
def shop(db) -> Shop:
    return Shop(Catalog(db), Reservations(db, ttl_seconds=TTL_SECONDS))


@pytest.fixture
def ttl_seconds() -> int:
    return TTL_SECONDS
