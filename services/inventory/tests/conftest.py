"""inventory served by a real uvicorn over a real database (SQLite and PostgreSQL); tokens come
from a TokenMint standing in for users."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import pytest
from microshop_chassis.host import ServiceHost
from microshop_chassis.provide import ServiceApp
from microshop_chassis.testing import ApiClient, RunningApp, TokenMint
from microshop_inventory.bootstrap import build
from microshop_inventory.service import Reservations
from microshop_inventory.settings import InventorySettings


@dataclass
class Inventory:
    """The running service and a client for each kind of caller."""

    host: ServiceHost
    url: str
    anonymous: ApiClient
    customer: ApiClient
    admin: ApiClient
    service: ApiClient

    @property
    def app(self) -> ServiceApp:
        return self.host.app

    @property
    def settings(self) -> InventorySettings:
        return self.host.settings

    @property
    def reservations(self) -> Reservations:
        """The reservations use case the routes are given (the expiry tests sweep through it)."""
        return self.host.app.provided[Reservations]

    async def add_product(self, sku: str, *, on_hand: int = 0, price_cents: int = 1250) -> dict:
        """Create a product through the admin API and put ``on_hand`` units in stock."""
        created = await self.admin.put(f"/products/{sku}", json={"name": f"Product {sku}", "price_cents": price_cents})
        assert created.status == 201, created.body
        if on_hand:
            stocked = await self.admin.put(f"/stock/{sku}", json={"on_hand": on_hand})
            assert stocked.status == 200, stocked.body
        return created.body

    async def stock_item(self, sku: str) -> dict:
        """The sku's whole item of ``GET /stock``, after checking what must always hold of it:
        ``available = on_hand - reserved`` and ``on_hand = received_units - sold_units``."""
        reply = await self.admin.get("/stock", params={"limit": 1000})
        assert reply.status == 200, reply.body
        item = next(item for item in reply.body["items"] if item["sku"] == sku)
        assert item["available"] == item["on_hand"] - item["reserved"], item
        assert item["on_hand"] == item["received_units"] - item["sold_units"], item
        assert item["sold_units"] >= 0, item
        return item

    async def stock(self, sku: str) -> dict:
        """``{sku, on_hand, reserved}`` as the admin API reports it (see ``stock_item``)."""
        item = await self.stock_item(sku)
        return {key: item[key] for key in ("sku", "on_hand", "reserved")}

    async def counters(self, sku: str) -> tuple[int, int]:
        """``(received_units, sold_units)`` as the admin API reports them."""
        item = await self.stock_item(sku)
        return item["received_units"], item["sold_units"]

    async def reserve(self, order_id: str, items: dict[str, int]):
        """``PUT /reservations/{order_id}`` as orders would call it."""
        body = {"items": [{"sku": sku, "quantity": q} for sku, q in items.items()]}
        return await self.service.put(f"/reservations/{order_id}", json=body)


@pytest.fixture
def settings(database_url, tmp_path) -> InventorySettings:
    # The background sweeper stays out of the way; expiry tests run it on purpose.
    return InventorySettings(database_url=database_url, data_dir=tmp_path, sweep_interval_seconds=3600)


@pytest.fixture
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture
def serve(mint) -> Callable[[InventorySettings], AbstractAsyncContextManager[Inventory]]:
    @asynccontextmanager
    async def run(settings: InventorySettings) -> AsyncIterator[Inventory]:
        host = build(settings, verifier=mint.verifier())
        async with RunningApp(host.app) as running:
            yield Inventory(
                host=host,
                url=running.url,
                anonymous=ApiClient(running.url),
                customer=ApiClient(running.url, mint.token(role="customer")),
                admin=ApiClient(running.url, mint.token(role="admin")),
                service=ApiClient(running.url, mint.token("service:orders", role="service")),
            )

    return run


@pytest.fixture
async def inventory(settings, serve) -> AsyncIterator[Inventory]:
    async with serve(settings) as running:
        yield running

