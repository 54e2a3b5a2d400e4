"""Seeding the demo catalog against a tiny fake gateway served over real HTTP."""

import pytest
from aiohttp import web
from microshop_cli.catalog import DEMO_CATALOG, LOW_STOCK_SKU
from microshop_cli.components import free_ports
from microshop_cli.errors import SeedError
from microshop_cli.seed import seed_catalog

TOKEN = "admin-token"


class FakeGateway:
    """Just the routes seeding uses, with an in-memory catalog and a log of the calls."""

    def __init__(self) -> None:
        self.products: dict[str, dict] = {}
        self.stock: dict[str, int] = {}
        self.calls: list[tuple[str, str]] = []
        self.unavailable_once: set[str] = set()  # GETs answering 503 the first time
        self.broken: set[str] = set()  # GETs answering 500
        app = web.Application(middlewares=[self.record])
        app.add_routes([
            web.post("/api/users/login", self.login),
            web.get("/api/inventory/products/{sku}", self.get_product),
            web.put("/api/inventory/products/{sku}", self.put_product),
            web.put("/api/inventory/stock/{sku}", self.put_stock),
        ])
        self.runner = web.AppRunner(app)
        self.url = ""

    async def start(self) -> None:
        await self.runner.setup()
        port = free_ports(["gateway"])["gateway"]
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    @web.middleware
    async def record(self, request, handler):
        self.calls.append((request.method, request.path))
        if request.method == "PUT" and request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"detail": "admin only"}, status=401)
        return await handler(request)

    async def login(self, request):
        body = await request.json()
        if (body["email"], body["password"]) != ("admin@microshop.local", "microshop-admin"):
            return web.json_response({"detail": "E-mail or password is wrong."}, status=401)
        return web.json_response({"access_token": TOKEN, "token_type": "bearer"})

    async def get_product(self, request):
        sku = request.match_info["sku"]
        if sku in self.unavailable_once:
            self.unavailable_once.discard(sku)
            return web.json_response({"detail": "inventory unavailable"}, status=503)
        if sku in self.broken:
            return web.json_response({"detail": "boom"}, status=500)
        if sku not in self.products:
            return web.json_response({"detail": "no such product"}, status=404)
        return web.json_response({"sku": sku, **self.products[sku]})

    async def put_product(self, request):
        self.products[request.match_info["sku"]] = await request.json()
        return web.json_response({}, status=200)

    async def put_stock(self, request):
        self.stock[request.match_info["sku"]] = (await request.json())["on_hand"]
        return web.json_response({}, status=200)


@pytest.fixture
async def gateway():
    fake = FakeGateway()
    await fake.start()
    yield fake
    await fake.runner.cleanup()


async def seed(gateway: FakeGateway, password: str = "microshop-admin"):
    return await seed_catalog(gateway.url, email="admin@microshop.local", password=password, retry_for=2)


async def test_only_missing_products_are_created_so_used_stock_survives(gateway):
    kept = DEMO_CATALOG[0]
    gateway.products[kept.sku] = {"name": "renamed by the shop owner"}
    gateway.stock[kept.sku] = 1  # sold down since the first start

    report = await seed(gateway)

    assert report.existing == [kept.sku]
    assert report.created == [item.sku for item in DEMO_CATALOG[1:]]
    assert gateway.products[kept.sku] == {"name": "renamed by the shop owner"}
    assert gateway.stock[kept.sku] == 1
    for item in DEMO_CATALOG[1:]:
        assert gateway.products[item.sku] == {"name": item.name, "description": item.description,
                                              "price_cents": item.price_cents, "currency": "USD"}
        assert gateway.stock[item.sku] == item.on_hand
    assert ("PUT", f"/api/inventory/products/{kept.sku}") not in gateway.calls


async def test_seeding_twice_changes_nothing_the_second_time(gateway):
    await seed(gateway)
    writes_after_first = [call for call in gateway.calls if call[0] == "PUT"]
    report = await seed(gateway)
    assert report.created == []
    assert report.existing == [item.sku for item in DEMO_CATALOG]
    assert [call for call in gateway.calls if call[0] == "PUT"] == writes_after_first


async def test_a_wrong_admin_password_is_reported(gateway):
    with pytest.raises(SeedError, match="admin login as admin@microshop.local failed: HTTP 401"):
        await seed(gateway, password="wrong")
    assert gateway.products == {}


async def test_a_transient_503_is_retried(gateway):
    sku = DEMO_CATALOG[2].sku
    gateway.unavailable_once.add(sku)
    report = await seed(gateway)
    assert sku in report.created
    assert gateway.calls.count(("GET", f"/api/inventory/products/{sku}")) == 2


async def test_an_unexpected_answer_stops_seeding(gateway):
    gateway.broken.add(DEMO_CATALOG[1].sku)
    with pytest.raises(SeedError, match=f"{DEMO_CATALOG[1].sku}: HTTP 500"):
        await seed(gateway)
    assert DEMO_CATALOG[1].sku not in gateway.products


def test_the_demo_catalog_is_a_usable_shop():
    skus = [item.sku for item in DEMO_CATALOG]
    assert 6 <= len(DEMO_CATALOG) <= 12 and len(set(skus)) == len(skus)
    assert all(item.name and len(item.description) > 20 for item in DEMO_CATALOG)
    assert all(isinstance(item.price_cents, int) and item.price_cents > 0 for item in DEMO_CATALOG)
    assert {item.currency for item in DEMO_CATALOG} == {"USD"}
    low = next(item for item in DEMO_CATALOG if item.sku == LOW_STOCK_SKU)
    assert low.on_hand == 3
    assert all(item.on_hand >= 20 for item in DEMO_CATALOG if item.sku != LOW_STOCK_SKU)
