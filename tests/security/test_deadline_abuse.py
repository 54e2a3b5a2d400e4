"""Issue 8 item 3: a client's deadline must not let it open the circuit breakers every customer
shares. One customer sends a burst of checkouts with ``X-Request-Timeout: 0.03`` while another
checks out normally; the downstreams answer in about 50 ms, so a 30 ms deadline cuts every call
short. Before the fix orders counted those cut calls as failures of inventory and payments, opened
both circuits, and every customer got 503 for five seconds.

Two defences, each tested on its own:
- through the gateway with the default floor: a deadline from outside is raised to
  ``min_request_timeout`` (1 s), so the calls are not even cut short;
- straight to orders with no floor at all: the cut calls are the caller's own doing, and the
  breakers do not count them.

Real parts: orders, inventory, payments and the gateway served by uvicorn on free ports, the card
processor simulator, the session's nats-server, SQLite files. Only users is a stand-in handing
out service tokens of the test's ``TokenMint``.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack

import pytest
from aiohttp import web
from microshop_card_processor.app import Config
from microshop_card_processor.app import create_app as create_card_processor
from microshop_chassis.services import routed
from microshop_chassis.testing import ApiClient, RunningApp, TokenMint, free_port
from microshop_gateway.bootstrap import build as build_gateway
from microshop_gateway.settings import GatewaySettings
from microshop_inventory.bootstrap import build as build_inventory
from microshop_inventory.settings import InventorySettings
from microshop_orders.bootstrap import build as build_orders
from microshop_orders.settings import OrdersSettings
from microshop_payments.bootstrap import build as build_payments
from microshop_payments.settings import PaymentsSettings

DOWNSTREAM_LATENCY = 0.05  # what inventory and payments take per request, on top of their own work
ATTACK_TIMEOUT = "0.03"
ATTACK_WAVE = 20  # the attacker's checkouts in flight at once
HONEST_CHECKOUTS = 4
CARD = {"card_number": "4242424242424242", "expiry_month": 12, "expiry_year": 2030, "cvc": "123"}


def slowed(app, seconds: float, deadlines_seen: list[float]):
    """The ASGI app answering each HTTP request ``seconds`` later: a real service that is slow-ish.
    Notes the ``X-Request-Timeout`` of each request."""

    async def slow_app(scope, receive, send):
        if scope["type"] == "http":
            timeout = dict(scope["headers"]).get(b"x-request-timeout")
            if timeout is not None:
                deadlines_seen.append(float(timeout))
            await asyncio.sleep(seconds)  # simulated latency, not synchronisation
        await app(scope, receive, send)

    return slow_app


async def start_users_stand_in(stack: AsyncExitStack, mint: TokenMint) -> str:
    """users' /service-tokens, answering with tokens of the mint every service here verifies."""

    async def service_token(request: web.Request) -> web.Response:
        service = (await request.json())["service"]
        return web.json_response({"access_token": mint.token(f"service:{service}", role="service"),
                                  "token_type": "bearer", "expires_in": 900})

    app = web.Application()
    app.router.add_post("/service-tokens", service_token)
    return await start_aiohttp(stack, app)


async def start_aiohttp(stack: AsyncExitStack, app: web.Application) -> str:
    runner = web.AppRunner(app)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return f"http://127.0.0.1:{port}"


class Shop:
    """The running system of one test: URLs and the hosts, to read their metrics."""

    def __init__(self, urls: dict[str, str], hosts: dict, deadlines_seen: list[float]) -> None:
        self.urls = urls
        self.hosts = hosts
        self.deadlines_seen = deadlines_seen  # X-Request-Timeout of the calls inventory and payments got


async def start_shop(stack: AsyncExitStack, *, nats_url: str, tmp_path, mint: TokenMint, **floor) -> Shop:
    """``floor``: ``min_request_timeout=...`` for every service, or nothing for the default."""
    ports = {name: free_port() for name in [*(spec.name for spec in routed()), "gateway"]}
    urls = {spec.name: f"http://127.0.0.1:{ports[spec.name]}" for spec in routed()}
    urls["users"] = await start_users_stand_in(stack, mint)
    card_processor = await start_aiohttp(stack, create_card_processor(Config()))
    common = {**{f"{name}_url": url for name, url in urls.items()}, "nats_url": nats_url,
              "service_secret": "deadline-abuse-secret", **floor}
    hosts = {
        "inventory": build_inventory(InventorySettings(**common, port=ports["inventory"],
                                                       data_dir=tmp_path / "inventory"), verifier=mint.verifier()),
        "payments": build_payments(PaymentsSettings(**common, port=ports["payments"], data_dir=tmp_path / "payments",
                                                    card_processor_url=card_processor), verifier=mint.verifier()),
        "orders": build_orders(OrdersSettings(**common, port=ports["orders"], data_dir=tmp_path / "orders"),
                               verifier=mint.verifier()),
        "gateway": build_gateway(GatewaySettings(**common, port=ports["gateway"], data_dir=tmp_path / "gateway")),
    }
    slow = {"inventory", "payments"}
    deadlines_seen: list[float] = []
    for name, host in hosts.items():
        app = slowed(host.app, DOWNSTREAM_LATENCY, deadlines_seen) if name in slow else host.app
        await stack.enter_async_context(RunningApp(app, port=ports[name]))
    admin = ApiClient(urls["inventory"], mint.token("admin-1", role="admin"))
    stocked = await admin.put("/products/MUG-1", json={"name": "Mug", "price_cents": 1250})
    assert stocked.status == 201, stocked.body
    assert (await admin.put("/stock/MUG-1", json={"on_hand": 100_000})).status == 200
    return Shop({**urls, "gateway": f"http://127.0.0.1:{ports['gateway']}"}, hosts, deadlines_seen)


async def checkout(api: ApiClient, path: str, **headers: str):
    return await api.post(path, json={"items": [{"sku": "MUG-1", "quantity": 1}], "payment": CARD},
                          headers={"Idempotency-Key": str(uuid.uuid4()), **headers})


async def attack_while_honest_customer_checks_out(attacker: ApiClient, honest: ApiClient, path: str) -> list:
    """Waves of short-deadline checkouts from the attacker for as long as the honest customer's
    checkouts (one after the other) take; returns the honest customer's replies."""
    honest_done = asyncio.Event()

    async def attack() -> None:
        while not honest_done.is_set():
            await asyncio.gather(*(checkout(attacker, path, **{"X-Request-Timeout": ATTACK_TIMEOUT})
                                   for _ in range(ATTACK_WAVE)))

    async def shop_honestly() -> list:
        try:
            replies = []
            for _ in range(HONEST_CHECKOUTS):
                replies.append(await checkout(honest, path))
            return replies
        finally:
            honest_done.set()

    attacking = asyncio.create_task(attack())
    await asyncio.sleep(0.2)  # the first wave is under way: the honest checkouts meet the attack
    replies = await shop_honestly()
    await attacking
    return replies


def assert_breakers_stayed_closed(shop: Shop) -> None:
    for name in ("orders", "payments"):
        metrics = shop.hosts[name].metrics
        for target in ("inventory", "payments", "card-processor"):
            opened = metrics.value("circuit_breaker_transitions_total", {"target": target, "state": "open"})
            assert not opened, f"{name}'s breaker for {target} opened {opened} times"


def cut_by_caller(shop: Shop) -> float:
    """orders' calls to inventory and payments cut short by the caller's own deadline."""
    metrics = shop.hosts["orders"].metrics
    return sum(metrics.value("http_client_requests_total",
                             {"target": target, "method": method, "outcome": "deadline_exceeded_by_caller"}) or 0
               for target in ("inventory", "payments") for method in ("GET", "POST", "PUT"))


@pytest.fixture
def mint() -> TokenMint:
    return TokenMint()


async def test_a_short_deadline_burst_through_the_gateway_leaves_other_customers_checking_out(
        nats_server, tmp_path, mint):
    async with AsyncExitStack() as stack:
        shop = await start_shop(stack, nats_url=nats_server.url, tmp_path=tmp_path, mint=mint)
        gateway = shop.urls["gateway"]
        attacker = ApiClient(gateway, mint.token("customer-a", email="a@example.com"))
        honest = ApiClient(gateway, mint.token("customer-b", email="b@example.com"))

        replies = await attack_while_honest_customer_checks_out(attacker, honest, "/api/orders")

        assert [(r.status, r.body.get("status"), r.body.get("detail")) for r in replies] == [
            (201, "CONFIRMED", None)] * HONEST_CHECKOUTS
        assert_breakers_stayed_closed(shop)
        # The attacker's 30 ms became the 1 s floor at the gateway: what orders passed on to
        # inventory and payments is what is left of a second, not of 30 ms. (How much is left of
        # it depends on the machine's load, so only the largest is bounded from below.)
        assert shop.deadlines_seen and max(shop.deadlines_seen) > 0.5
        health = (await ApiClient(shop.urls["orders"]).get("/health")).body
        assert set(health["circuit_breakers"].values()) == {"closed"}


async def test_without_a_floor_calls_cut_by_the_callers_deadline_do_not_open_the_breakers(
        nats_server, tmp_path, mint):
    async with AsyncExitStack() as stack:
        shop = await start_shop(stack, nats_url=nats_server.url, tmp_path=tmp_path, mint=mint,
                                min_request_timeout=0.0)
        orders = shop.urls["orders"]  # straight to the service port: no gateway in between
        attacker = ApiClient(orders, mint.token("customer-a", email="a@example.com"))
        honest = ApiClient(orders, mint.token("customer-b", email="b@example.com"))

        replies = await attack_while_honest_customer_checks_out(attacker, honest, "/orders")

        assert [(r.status, r.body.get("status"), r.body.get("detail")) for r in replies] == [
            (201, "CONFIRMED", None)] * HONEST_CHECKOUTS
        assert_breakers_stayed_closed(shop)
        assert cut_by_caller(shop) >= ATTACK_WAVE  # the attack did cut calls short
        health = (await ApiClient(orders).get("/health")).body
        assert set(health["circuit_breakers"].values()) == {"closed"}
