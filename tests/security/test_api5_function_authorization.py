"""API5:2023 Broken function level authorization: a customer cannot call admin functions (403);
the endpoints meant for other services answer only a service identity (an admin is refused too,
403), and the public gateway does not route them at all (404), whoever asks."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.asyncio(loop_scope="session")

ORDER_ID = "4f1c2d3e-0000-4000-8000-00000000a5a5"  # fixed: stable test ids; no such order exists
# Admin functions through the gateway (operators' read endpoints included).
ADMIN_CALLS = [
    ("GET", "/api/users/users", None),
    ("GET", "/api/inventory/stock", None),
    ("GET", "/api/inventory/stock/summary", None),
    ("PUT", "/api/inventory/stock/MUG-STONEWARE-12", {"on_hand": 0}),
    ("PUT", "/api/inventory/products/NEW-SKU-1", {"name": "n", "description": "", "price_cents": 100,
                                                 "currency": "USD"}),
    ("GET", "/api/inventory/reservations", None),
    ("GET", "/api/payments", None),
    ("GET", f"/api/orders/{ORDER_ID}/saga", None),
    ("GET", "/api/reports/sales", None),
    ("POST", "/api/reports/rebuild", None),
]

# Endpoints meant for microshop services only, on each service's own port: (service, method, path, body).
INTERNAL_CALLS = [
    ("inventory", "PUT", f"/reservations/{ORDER_ID}", {"items": [{"sku": "MUG-STONEWARE-12", "quantity": 1}]}),
    ("inventory", "GET", f"/reservations/{ORDER_ID}", None),
    ("inventory", "POST", f"/reservations/{ORDER_ID}/commit", None),
    ("inventory", "POST", f"/reservations/{ORDER_ID}/release", None),
    ("inventory", "POST", f"/reservations/{ORDER_ID}/restock", None),
    ("payments", "POST", "/payment-methods", {"card_number": "4242424242424242", "expiry_month": 12,
                                              "expiry_year": 2031, "cvc": "123"}),
    ("payments", "POST", "/charges", {"order_id": ORDER_ID, "customer_id": "c-1", "amount_cents": 100,
                                      "currency": "USD", "card_token": "tok_x"}),
    ("payments", "POST", f"/payments/{ORDER_ID}/refund", None),
]
# The same through the gateway, by the public prefixes (users' service tokens too).
INTERNAL_VIA_GATEWAY = [
    ("PUT", f"/api/inventory/reservations/{ORDER_ID}"),
    ("GET", f"/api/inventory/reservations/{ORDER_ID}"),
    ("POST", f"/api/inventory/reservations/{ORDER_ID}/commit"),
    ("POST", f"/api/inventory/reservations/{ORDER_ID}/release"),
    ("POST", f"/api/inventory/reservations/{ORDER_ID}/restock"),
    ("POST", "/api/payments/payment-methods"),
    ("POST", "/api/payments/charges"),
    ("POST", f"/api/payments/{ORDER_ID}/refund"),
    ("POST", "/api/users/service-tokens"),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS, ids=lambda v: v if isinstance(v, str) else "")
async def test_a_customer_cannot_call_admin_functions(secured, method, path, body):
    reply = await secured.gateway(secured.customers["bob"].token).request(method, path, json=body)
    secured.assert_problem(reply, 403, "forbidden")


@pytest.mark.parametrize("role", ["customer", "admin"])
@pytest.mark.parametrize(("service", "method", "path", "body"), INTERNAL_CALLS,
                         ids=lambda v: v if isinstance(v, str) and not v.startswith("{") else "")
async def test_internal_endpoints_refuse_people(secured, role, service, method, path, body):
    token = secured.customers["bob"].token if role == "customer" else secured.admin.token
    reply = await secured.direct(service, token).request(method, path, json=body,
                                                         headers={"Idempotency-Key": str(uuid.uuid4())})
    secured.assert_problem(reply, 403, "forbidden")


async def test_internal_endpoints_answer_a_service(secured):
    """The control for the refusals above: a service token gets past authorization (the unknown
    order's reservation is simply not found)."""
    reply = await secured.direct("inventory", secured.service_token).get(f"/reservations/{ORDER_ID}")
    secured.assert_problem(reply, 404, "reservation-not-found")


@pytest.mark.parametrize("role", ["anonymous", "customer", "admin", "service"])
@pytest.mark.parametrize(("method", "path"), INTERNAL_VIA_GATEWAY, ids=lambda v: v)
async def test_the_gateway_does_not_route_internal_endpoints(secured, role, method, path):
    token = {"anonymous": None, "customer": secured.customers["bob"].token, "admin": secured.admin.token,
             "service": secured.service_token}[role]
    reply = await secured.gateway(token).request(method, path, json={},
                                                 headers={"Idempotency-Key": str(uuid.uuid4())})
    secured.assert_problem(reply, 404)
