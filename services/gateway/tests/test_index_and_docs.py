"""The index at /, and each service's Swagger UI reachable through the proxy."""

import re

from fastapi import FastAPI

from microshop_chassis.testing import ApiClient, RunningApp
from microshop_gateway.bootstrap import build
from microshop_gateway.settings import SERVICES

from .conftest import OPEN_API

_SAFE_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)+")


def fastapi_service() -> FastAPI:
    service = FastAPI(title="a service")

    @service.get("/items")
    async def items() -> list[str]:
        return ["mug"]

    @service.get("/orders/{order_id}")
    async def order(order_id: str) -> dict:
        return {"id": order_id}

    return service


async def test_index_lists_every_service_api_and_docs(gateway):
    reply = await ApiClient(gateway.url).get("/")
    assert reply.status == 200
    assert reply.body == {
        "service": "gateway",
        "api": {name: f"/api/{name}/" for name in SERVICES},
        "docs": {name: f"/api/{name}/docs" for name in SERVICES},
    }


async def test_a_services_docs_work_behind_the_prefix(settings):
    async with RunningApp(fastapi_service()) as service:
        settings = settings.model_copy(update={"users_url": service.url})
        async with RunningApp(build(settings, public_api=OPEN_API).app) as gateway:
            api = ApiClient(gateway.url)
            docs = await api.get("/api/users/docs")
            schema = await api.get("/api/users/openapi.json")
            items = await api.get("/api/users/items")
        direct_schema = await ApiClient(service.url).get("/openapi.json")
    assert docs.status == 200 and "'/api/users/openapi.json'" in docs.body  # what the page fetches
    assert schema.status == 200 and schema.body["servers"] == [{"url": "/api/users"}]  # "Try it out" base
    assert "/items" in schema.body["paths"]
    assert items.status == 200 and items.body == ["mug"]
    assert "servers" not in direct_schema.body  # called directly, the service is unprefixed


async def test_collection_service_docs_show_public_paths(settings):
    """orders' document, seen through the gateway, lists its /orders paths with servers "/api", so
    "Try it out" calls /api/orders/..., and hides what the gateway does not route (e.g. /health)."""
    async with RunningApp(fastapi_service()) as service:
        settings = settings.model_copy(update={"orders_url": service.url})
        async with RunningApp(build(settings, public_api=OPEN_API).app) as gateway:
            schema = await ApiClient(gateway.url).get("/api/orders/openapi.json")
    assert schema.status == 200 and schema.body["servers"] == [{"url": "/api"}]
    assert list(schema.body["paths"]) == ["/orders/{order_id}"]  # /items is not routed for orders
