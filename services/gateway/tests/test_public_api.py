"""Only the public API goes through: the endpoints meant for other services (reservations,
charges, refunds, service tokens) and operations endpoints answer 404 at the gateway, as if they
did not exist, and the gateway's own /metrics needs an operator's token."""

import pytest
from fastapi import FastAPI

from microshop_chassis.testing import ApiClient, RunningApp, TokenMint
from microshop_gateway.bootstrap import build
from microshop_gateway.public_api import PublicRoute

# Through the gateway, never: each is an internal endpoint of the service behind that prefix.
INTERNAL = [
    ("POST", "/api/payments/order-1/refund"),
    ("GET", "/api/payments/order-1%2Frefund"),  # an encoded slash is still the refund path
    ("PUT", "/api/inventory/reservations/order-1"),
    ("GET", "/api/inventory/reservations/order-1"),
    ("POST", "/api/inventory/reservations/order-1/commit"),
    ("POST", "/api/inventory/reservations/order-1/release"),
    ("POST", "/api/inventory/reservations/order-1/restock"),
    ("POST", "/api/users/service-tokens"),
    ("GET", "/api/users/.well-known/jwks.json"),
    ("POST", "/api/users/admin/signing-keys/rotate"),
    ("GET", "/api/users/admin/messaging"),
    ("GET", "/api/users/metrics"),
    ("GET", "/api/reports/health"),
    ("DELETE", "/api/orders/order-1"),
    ("PUT", "/api/inventory/products"),
]
PUBLIC = [
    ("POST", "/api/users/register", "/echo/register"),
    ("POST", "/api/users/login", "/echo/login"),
    ("GET", "/api/users/me", "/echo/me"),
    ("GET", "/api/inventory/products", "/echo/products"),
    ("PUT", "/api/inventory/stock/MUG", "/echo/stock/MUG"),
    ("POST", "/api/orders", "/echo/orders"),
    ("POST", "/api/orders/order-1/cancel", "/echo/orders/order-1/cancel"),
    ("GET", "/api/payments/order-1", "/echo/payments/order-1"),
    ("GET", "/api/notifications", "/echo/notifications"),
    ("GET", "/api/reports/sales", "/echo/sales"),
]


@pytest.fixture
async def public_gateway(settings, fake_users, fake_inventory):
    """The gateway with its real table, every service pointed at a fake that echoes the request."""
    echo = {f"{name}_url": f"{fake.url}/echo" for name, fake in [
        ("users", fake_users), ("inventory", fake_inventory), ("orders", fake_users), ("payments", fake_users),
        ("notifications", fake_inventory), ("reports", fake_inventory)]}
    mint = TokenMint()
    async with RunningApp(build(settings.model_copy(update=echo), verifier=mint.verifier()).app) as gateway:
        gateway.mint = mint
        yield gateway


@pytest.mark.parametrize(("method", "path"), INTERNAL)
async def test_internal_endpoints_are_not_found_through_the_gateway(public_gateway, fake_users, fake_inventory,
                                                                    method, path):
    reply = await ApiClient(public_gateway.url).request(method, path, json={})
    assert reply.status == 404
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert reply.body["status"] == 404
    assert not fake_users.hits and not fake_inventory.hits  # nothing was forwarded


@pytest.mark.parametrize(("method", "path", "arrived_as"), PUBLIC)
async def test_the_public_api_is_forwarded(public_gateway, method, path, arrived_as):
    reply = await ApiClient(public_gateway.url).request(method, path, json={})
    assert reply.status == 200, reply.body
    assert (reply.body["method"], reply.body["path"]) == (method, arrived_as)


async def test_the_gateways_metrics_need_an_admin_or_service_token(public_gateway):
    api, mint = ApiClient(public_gateway.url), public_gateway.mint
    assert (await api.get("/metrics")).status == 401
    assert (await api.get("/metrics", token=mint.token(role="customer"))).status == 403
    for role in ("admin", "service"):
        reply = await api.get("/metrics", token=mint.token(role=role))
        assert reply.status == 200 and "http_server_requests_total" in reply.body


async def test_a_services_document_through_the_gateway_lists_only_public_operations(settings):
    service = FastAPI(title="inventory")

    @service.get("/products")
    async def products() -> list[str]:
        return []

    @service.get("/reservations/{order_id}")
    async def reservation(order_id: str) -> dict:
        return {}

    @service.post("/reservations/{order_id}/commit")
    async def commit(order_id: str) -> dict:
        return {}

    async with RunningApp(service) as running:
        gateway_settings = settings.model_copy(update={"inventory_url": running.url})
        async with RunningApp(build(gateway_settings).app) as gateway:
            schema = await ApiClient(gateway.url).get("/api/inventory/openapi.json")
    assert list(schema.body["paths"]) == ["/products"]


def test_a_route_pattern_matches_one_segment_per_placeholder():
    cancel = PublicRoute("POST", "/orders/{order_id}/cancel")
    assert cancel.matches("POST", "/orders/7/cancel")
    assert not cancel.matches("GET", "/orders/7/cancel")
    assert not cancel.matches("POST", "/orders/7/8/cancel")
    assert not cancel.matches("POST", "/orders//cancel")
    assert not cancel.matches("POST", "/orders/../cancel")
