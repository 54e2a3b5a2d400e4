"""API7:2023 Server side request forgery: no endpoint takes a URL from a client (nothing to
forge with); the one place a client shapes an outgoing request is the gateway's path, and it
cannot climb out of a service's prefix with dot segments, encoded or not."""

from __future__ import annotations

import aiohttp
import pytest
from yarl import URL

pytestmark = pytest.mark.asyncio(loop_scope="session")

TRAVERSALS = [
    "/api/inventory/../users/users",
    "/api/inventory/%2e%2e/users/users",
    "/api/inventory/%2E%2E/%2E%2E/metrics",
    "/api/orders/..%2f..%2fusers/users",
    "/api/inventory/products/..%2F..%2Fstock",
]


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_gateway_paths_cannot_climb_out_of_a_service(secured, path):
    url = URL(secured.url("gateway") + path, encoded=True)  # sent as written, not normalised by the client
    headers = {"Authorization": f"Bearer {secured.customers['bob'].token}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as reply:
            body = await reply.json(content_type=None)
            assert reply.status in (400, 404), f"{path} answered {reply.status}: {body}"
            assert reply.headers["Content-Type"].startswith("application/problem+json")
            assert "items" not in body


async def test_no_operation_takes_a_url(secured):
    """The inventory of API7: no request body, query or path parameter of any service is a URL."""
    suspicious = []
    for name in ("users", "inventory", "orders", "payments", "notifications", "reports", "gateway"):
        document = (await secured.direct(name).get("/openapi.json")).body
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                names = [parameter["name"] for parameter in operation.get("parameters", [])]
                if any(word in name.lower() for name in names for word in ("url", "uri", "callback", "webhook")):
                    suspicious.append(f"{name}: {method.upper()} {path}")
        for schema_name, schema in document.get("components", {}).get("schemas", {}).items():
            for field, spec in schema.get("properties", {}).items():
                if spec.get("format") == "uri" or any(w in field.lower() for w in ("url", "callback", "webhook")):
                    suspicious.append(f"{name}: {schema_name}.{field}")
    assert not suspicious, f"client-supplied URLs: {suspicious}"
