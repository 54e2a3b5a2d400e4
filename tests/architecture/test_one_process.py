"""Nothing is process-wide: every service of the list is built in this one process, side by side
(and one of them twice), each with its own settings, database, session, metrics and tracer, and
they work together: a customer registers and checks out through the gateway, the e-mail is sent
and the sales report counts the order. Then every one stops cleanly, its tasks awaited."""

from __future__ import annotations

import asyncio
import importlib
import uuid
from contextlib import AsyncExitStack

import pytest
from aiohttp import web
from microshop_card_processor.app import Config
from microshop_card_processor.app import create_app as create_card_processor
from microshop_chassis.host import ServiceHost
from microshop_chassis.services import SERVICES, routed
from microshop_chassis.testing import ApiClient, NatsServer, RunningApp, free_port, wait_until
from microshop_mail_catcher.app import start as start_mail_catcher

ADMIN = ("admin@example.com", "admin-password-1")


def settings_class(name: str):
    module = importlib.import_module(f"microshop_{name}.settings")
    return next(value for attribute, value in vars(module).items()
                if attribute.endswith("Settings") and attribute != "ServiceSettings" and isinstance(value, type))


def build(name: str, **settings):
    return importlib.import_module(f"microshop_{name}.bootstrap").build(settings_class(name)(**settings))


@pytest.fixture
def broker(tmp_path):
    """A broker of this test's own: the sales report counts every order event on the stream."""
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
async def outside(tmp_path):
    """The outside systems a real deployment has: a card processor and an SMTP server."""
    runner = web.AppRunner(create_card_processor(Config()))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    mail = await start_mail_catcher("127.0.0.1", 0, 0, None)
    yield f"http://127.0.0.1:{port}", mail
    await mail.close()
    await runner.cleanup()


async def test_every_service_side_by_side_in_one_process(broker, tmp_path, outside):
    card_processor_url, mail = outside
    ports = {spec.name: free_port() for spec in SERVICES}
    urls = {f"{spec.name}_url": f"http://127.0.0.1:{ports[spec.name]}" for spec in routed()}
    common = {**urls, "nats_url": broker.url, "service_secret": "one-process-secret",
              "card_processor_url": card_processor_url, "smtp_host": "127.0.0.1", "smtp_port": mail.smtp_port,
              "admin_email": ADMIN[0], "admin_password": ADMIN[1]}
    hosts: dict[str, ServiceHost] = {
        spec.name: build(spec.name, **common, port=ports[spec.name], data_dir=tmp_path / spec.name)
        for spec in SERVICES
    }
    # A second inventory beside the first, on a database of its own.
    twin = build("inventory", **common, port=free_port(), data_dir=tmp_path / "inventory-twin")

    assert len({id(host.metrics.registry) for host in [*hosts.values(), twin]}) == len(hosts) + 1
    assert len({id(host.http) for host in [*hosts.values(), twin]}) == len(hosts) + 1
    assert len({id(host.tracer_provider) for host in [*hosts.values(), twin]}) == len(hosts) + 1

    tasks_before = asyncio.all_tasks()
    async with AsyncExitStack() as stack:
        for name, host in hosts.items():
            await stack.enter_async_context(RunningApp(host.app, port=ports[name]))
        running_twin = await stack.enter_async_context(RunningApp(twin.app))

        for name in hosts:
            health = (await ApiClient(f"http://127.0.0.1:{ports[name]}").get("/health")).body
            assert health["service"] == name
        for name in hosts:
            api = ApiClient(f"http://127.0.0.1:{ports[name]}")
            await wait_until(lambda api=api: _ready(api), timeout=20, what=f"{name} ready")

        gateway = ApiClient(f"http://127.0.0.1:{ports['gateway']}")
        admin = await _login(gateway, *ADMIN)
        stocked = await gateway.put("/api/inventory/products/MUG-1", token=admin,
                                    json={"name": "Mug", "price_cents": 1250})
        assert stocked.status == 201, stocked.body
        assert (await gateway.put("/api/inventory/stock/MUG-1", token=admin, json={"on_hand": 5})).status == 200
        # The twin has a catalog of its own: nothing of the first's.
        assert (await ApiClient(running_twin.url).get("/products")).body["total"] == 0

        email = f"c-{uuid.uuid4().hex[:8]}@example.com"
        registered = await gateway.post("/api/users/register",
                                        json={"email": email, "password": "correct-horse-1", "name": "Ada"})
        assert registered.status == 202, registered.body
        customer = await _login(gateway, email, "correct-horse-1")
        order = await gateway.post(
            "/api/orders", token=customer, headers={"Idempotency-Key": "one-process-1"},
            json={"items": [{"sku": "MUG-1", "quantity": 2}],
                  "payment": {"card_number": "4242424242424242", "expiry_month": 12, "expiry_year": 2030,
                              "cvc": "123"}},
        )
        assert order.status == 201 and order.body["status"] == "CONFIRMED", order.body

        mails = ApiClient(mail.http_url)
        await wait_until(lambda: _mail_for(mails, order.body["id"]), timeout=20, what="the confirmation e-mail")

        async def sold():
            report = (await gateway.get("/api/reports/sales", token=admin)).body
            return report if report.get("orders_confirmed") == 1 else None

        report = await wait_until(sold, timeout=20, what="the sales report")
        assert report["revenue_cents"] == 2 * 1250

        # Each service counted its own requests only.
        assert hosts["orders"].metrics.value(
            "http_server_requests_total", {"method": "POST", "route": "/orders", "status": "201"}) == 1
        assert hosts["inventory"].metrics.value(
            "http_server_requests_total", {"method": "POST", "route": "/orders", "status": "201"}) is None
        assert twin.metrics.value(
            "http_server_requests_total", {"method": "GET", "route": "/products", "status": "200"}) == 1

    await asyncio.sleep(0)  # let finished tasks be collected
    left = {task for task in asyncio.all_tasks() - tasks_before if not task.done()}
    assert left == set(), sorted(task.get_name() for task in left)


async def _ready(api: ApiClient) -> bool:
    return (await api.get("/ready")).status == 200


async def _login(gateway: ApiClient, email: str, password: str) -> str:
    reply = await gateway.post("/api/users/login", json={"email": email, "password": password})
    assert reply.status == 200, reply.body
    return reply.body["access_token"]


async def _mail_for(mails: ApiClient, order_id: str) -> bool:
    reply = await mails.get("/api/messages")
    return any(order_id in str(message) for message in reply.body["items"])
