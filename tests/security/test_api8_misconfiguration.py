"""API8:2023 Security misconfiguration: every answer, of the gateway and of each service, says
nosniff, names no server software, and is not stored by caches when it answers a request that
carried credentials; errors are problem+json without stack traces; the gateway's /metrics is not
public."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVICES = ("gateway", "users", "inventory", "orders", "payments", "notifications", "reports")
# (method, path, body) on the gateway: a success, and errors of several kinds.
GATEWAY_CALLS = [
    ("GET", "/api/inventory/products", None),
    ("GET", "/api/inventory/products/NO-SUCH-SKU", None),
    ("GET", "/api/no-such-service/x", None),
    ("POST", "/api/users/login", {"email": "nobody@example.com", "password": "wrong-password"}),
    ("POST", "/api/users/login", {"email": 1}),
    ("GET", "/api/users/me", None),
    ("DELETE", "/api/inventory/products", None),
]


async def raw(method: str, url: str, *, body: bytes | None = None, headers: dict | None = None):
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, data=body, headers=headers or {}) as reply:
            return reply.status, reply.headers, await reply.text()


def assert_hygienic(status: int, headers, text: str, where: str) -> None:
    assert headers.get("X-Content-Type-Options") == "nosniff", f"{where}: no nosniff"
    assert "Server" not in headers, f"{where}: server banner {headers.get('Server')!r}"
    if status >= 400:
        assert headers.get("Content-Type", "").startswith("application/problem+json"), \
            f"{where}: {status} as {headers.get('Content-Type')!r}"
        assert "Traceback" not in text and 'File "' not in text, f"{where}: a stack trace in the answer"


@pytest.mark.parametrize(("method", "path", "body"), GATEWAY_CALLS, ids=lambda v: v if isinstance(v, str) else "")
async def test_gateway_answers_are_hygienic(secured, method, path, body):
    reply = await secured.gateway().request(method, path, json=body)
    assert_hygienic(reply.status, reply.headers, str(reply.body), f"{method} {path} -> {reply.status}")


@pytest.mark.parametrize("service", SERVICES)
async def test_service_answers_are_hygienic(secured, service):
    base = secured.url(service)
    for method, path in (("GET", "/health"), ("GET", "/no-such-path"), ("PATCH", "/health")):
        status, headers, text = await raw(method, base + path)
        assert_hygienic(status, headers, text, f"{service} {method} {path} -> {status}")


@pytest.mark.parametrize("service", ["users", "orders", "gateway"])
async def test_unparseable_json_is_a_problem(secured, service):
    path = {"users": "/login", "orders": "/orders", "gateway": "/api/users/login"}[service]
    headers = {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4()),
               "Authorization": f"Bearer {secured.customers['bob'].token}"}
    status, response_headers, text = await raw("POST", secured.url(service) + path, body=b'{"email": ', headers=headers)
    assert status == 422, text  # one shape for every bad body: validation-error with its errors
    assert_hygienic(status, response_headers, text, f"{service} malformed JSON")


async def test_authenticated_answers_are_not_cached(secured):
    me = await secured.gateway(secured.customers["bob"].token).get("/api/users/me")
    assert me.status == 200
    assert "no-store" in me.headers.get("Cache-Control", ""), me.headers
    orders = await secured.direct("orders", secured.customers["bob"].token).get("/orders")
    assert "no-store" in orders.headers.get("Cache-Control", ""), orders.headers


async def test_token_answers_are_not_cached(secured):
    bob = secured.customers["bob"]
    login = await secured.gateway().post("/api/users/login",
                                         json={"email": bob.email, "password": secured.password})
    assert login.status == 200, login.body
    assert "no-store" in login.headers.get("Cache-Control", ""), login.headers


@pytest.mark.parametrize("role", ["anonymous", "customer"])
async def test_gateway_metrics_are_not_public(secured, role):
    token = None if role == "anonymous" else secured.customers["bob"].token
    reply = await secured.gateway(token).get("/metrics")
    assert reply.status == (401 if role == "anonymous" else 403), reply.status
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert "http_requests" not in str(reply.body)
