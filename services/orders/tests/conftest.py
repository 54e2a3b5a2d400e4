"""A stand-in for users (service tokens), inventory and payments, served over real HTTP on a free
port, for orders' own tests. It speaks the same API as the real services for the calls orders
makes, and records what it was asked, so tests can check "reserved once", "charged once".
(The whole-system tests in tests/e2e run the real services instead.)"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from microshop_chassis.contracts import (
    INVALID_CARD,
    OUT_OF_STOCK,
    PAYMENT_DECLINED,
    PAYMENT_VELOCITY,
    PAYMENT_VOIDED,
    RESERVATION_CLOSED,
    RESERVATION_COMMITTED,
)
from microshop_chassis.errors import ProblemType
from microshop_chassis.testing import RunningApp, TokenMint, free_port
from microshop_orders.bootstrap import build
from microshop_orders.settings import OrdersSettings

SERVICE_TOKEN = web.AppKey("service_token", str)


UNAVAILABLE = ProblemType("unavailable", 503)
PROCESSOR_UNAVAILABLE = ProblemType("processor-unavailable", 503)


def problem(kind: ProblemType, headers: dict[str, str] | None = None, **extra) -> web.Response:
    """An answer as the real service gives it, of a type declared in contracts/problems.json."""
    return web.json_response(
        {"type": kind.uri, "title": kind.slug, "status": kind.status, "detail": kind.slug, **extra},
        status=kind.status, content_type="application/problem+json", headers=headers,
    )


@dataclass
class FakeWorld:
    stock: dict[str, int] = field(default_factory=lambda: {"mug": 10, "tee": 5})
    prices: dict[str, int] = field(default_factory=lambda: {"mug": 1200, "tee": 2500})
    reservations: dict[str, dict] = field(default_factory=dict)
    payments: dict[str, dict] = field(default_factory=dict)
    charge_calls: int = 0
    refund_calls: int = 0
    payments_down: bool = False  # answer 503 to charges and refunds
    inventory_down: bool = False
    reserve_down: bool = False  # answer 503 to reservations only
    # A problem of a type orders does not know, answered to every charge: (status, title).
    charge_refusal: tuple[int, str] | None = None
    # What a release finds when the reservation is no longer HELD ("COMMITTED", "RESTOCKED").
    release_finds: str | None = None
    velocity_limited: set[str] = field(default_factory=set)  # customers payments refuses cards for
    tokenize_calls: int = 0
    price_lookups: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/service-tokens", self.service_token)
        app.router.add_get("/products", self.products)
        app.router.add_put("/reservations/{order_id}", self.reserve)
        app.router.add_post("/reservations/{order_id}/{action}", self.reservation_action)
        app.router.add_post("/payment-methods", self.tokenize)
        app.router.add_post("/charges", self.charge)
        app.router.add_post("/payments/{order_id}/refund", self.refund)
        return app

    async def service_token(self, request: web.Request) -> web.Response:
        return web.json_response({"access_token": request.app[SERVICE_TOKEN], "token_type": "bearer",
                                  "expires_in": 900})

    async def products(self, request: web.Request) -> web.Response:
        if self.inventory_down:
            return problem(UNAVAILABLE)
        self.price_lookups += 1
        skus = request.query.getall("sku", [])
        items = [{"sku": s, "name": s, "description": "", "price_cents": self.prices[s], "currency": "USD",
                  "available": self.stock[s]} for s in skus if s in self.prices]
        return web.json_response({"items": items, "total": len(items)})

    async def reserve(self, request: web.Request) -> web.Response:
        order_id = request.match_info["order_id"]
        if self.reserve_down:
            return problem(UNAVAILABLE)
        items = {i["sku"]: i["quantity"] for i in (await request.json())["items"]}
        if order_id in self.reservations:
            if self.reservations[order_id]["status"] == "RELEASED":
                return problem(RESERVATION_CLOSED)
            return web.json_response({**self.reservations[order_id], "order_id": order_id}, status=200)
        short = sorted(s for s, q in items.items() if self.stock.get(s, 0) < q)
        if short:
            return problem(OUT_OF_STOCK, skus=short)
        for sku, quantity in items.items():
            self.stock[sku] -= quantity
        self.reservations[order_id] = {"status": "HELD", "items": items}
        return web.json_response({"order_id": order_id, "status": "HELD"}, status=201)

    async def reservation_action(self, request: web.Request) -> web.Response:
        order_id, action = request.match_info["order_id"], request.match_info["action"]
        reservation = self.reservations.setdefault(order_id, {"status": "RELEASED", "items": {}})
        target = {"commit": "COMMITTED", "release": "RELEASED", "restock": "RESTOCKED"}[action]
        if action == "release" and self.release_finds:
            reservation["status"] = self.release_finds
            return problem(RESERVATION_COMMITTED, reservation_status=self.release_finds)
        if action in ("release", "restock") and reservation["status"] in ("HELD", "COMMITTED"):
            for sku, quantity in reservation["items"].items():
                self.stock[sku] += quantity
        reservation["status"] = target
        return web.json_response({"order_id": order_id, "status": target})

    async def tokenize(self, request: web.Request) -> web.Response:
        card = await request.json()
        self.tokenize_calls += 1
        if card.get("customer_id") in self.velocity_limited:
            return problem(PAYMENT_VELOCITY, headers={"Retry-After": "120"}, retry_after_seconds=120)
        if not card["card_number"].isdigit():
            return problem(INVALID_CARD, code="invalid_number")
        return web.json_response({"token": f"tok_{card['card_number']}", "brand": "visa",
                                  "last4": card["card_number"][-4:]}, status=201)

    async def charge(self, request: web.Request) -> web.Response:
        if self.payments_down:
            return problem(PROCESSOR_UNAVAILABLE)
        body = await request.json()
        self.charge_calls += 1
        if self.charge_refusal is not None:
            status, title = self.charge_refusal
            return web.json_response({"type": "https://microshop.dev/problems/validation-error", "title": title,
                                      "status": status, "detail": "amount_cents: too large"},
                                     status=status, content_type="application/problem+json")
        existing = self.payments.get(body["order_id"])
        if existing is not None and existing["status"] == "VOIDED":
            return problem(PAYMENT_VOIDED)
        if existing is None:
            declined = body["card_token"].endswith("0002")
            existing = {"id": str(uuid.uuid4()), "status": "DECLINED" if declined else "CAPTURED",
                        "amount_cents": body["amount_cents"], "key": request.headers["Idempotency-Key"]}
            self.payments[body["order_id"]] = existing
        if existing["status"] == "DECLINED":
            return problem(PAYMENT_DECLINED, decline_code="card_declined", payment_id=existing["id"])
        return web.json_response({**existing, "order_id": body["order_id"]}, status=201)

    async def refund(self, request: web.Request) -> web.Response:
        if self.payments_down:
            return problem(PROCESSOR_UNAVAILABLE)
        self.refund_calls += 1
        payment = self.payments.get(request.match_info["order_id"])
        if payment is None:  # like payments: a tombstone, so a late charge is refused
            payment = self.payments[request.match_info["order_id"]] = {"id": str(uuid.uuid4()), "status": "VOIDED"}
        elif payment["status"] == "CAPTURED":
            payment["status"] = "REFUNDED"
        return web.json_response(payment)


class RunningWorld:
    def __init__(self, world: FakeWorld, service_token: str) -> None:
        self.world = world
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = world.app()
        self.app[SERVICE_TOKEN] = service_token
        self.runner = web.AppRunner(self.app)

    async def __aenter__(self) -> RunningWorld:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


@pytest.fixture
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture
def world() -> FakeWorld:
    return FakeWorld()


@pytest.fixture
async def downstream(world, mint):
    async with RunningWorld(world, mint.token("service:orders", role="service")) as running:
        yield running


@pytest.fixture
def settings(database_url, nats_server, tmp_path, downstream) -> OrdersSettings:
    return OrdersSettings(
        database_url=database_url, nats_url=nats_server.url, data_dir=tmp_path,
        users_url=downstream.url, inventory_url=downstream.url, payments_url=downstream.url,
        checkout_wait_seconds=5, saga_lease_seconds=2, recovery_interval_seconds=0.05, http_timeout=2,
        price_quote_seconds=0,  # the tests change the world's prices and its outages between checkouts
    )


def start_orders(settings: OrdersSettings, mint: TokenMint) -> RunningApp:
    return RunningApp(build(settings, verifier=mint.verifier()).app)


@pytest.fixture
def orders_factory(settings, mint):
    """Builds a fresh orders process stand-in on the same database, e.g. to replace a 'crashed' one."""
    return lambda: start_orders(settings, mint)


@pytest.fixture
async def orders(orders_factory):
    async with orders_factory() as running:
        yield running
