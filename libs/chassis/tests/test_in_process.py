"""Calls answered in-process (the monolith): the same ServiceClient and the same callee app (edge
middleware, validation, problem+json), no socket; a URL not in the process still goes out over HTTP;
and several services side by side behind one public one (HostGroup), started and stopped in order."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from fastapi import APIRouter, Request
from microshop_chassis.context import request_id_var
from microshop_chassis.host import ServiceHost
from microshop_chassis.host_group import HostGroup
from microshop_chassis.http_client import HttpSession, ServiceClient, ServiceUnavailable
from microshop_chassis.in_process import LocalApps
from microshop_chassis.settings import ServiceSettings
from microshop_chassis.testing import ApiClient, RunningApp, free_port
from pydantic import BaseModel

ECHO = APIRouter()
SEEN: list[dict] = []


class Item(BaseModel):
    sku: str
    quantity: int


@ECHO.post("/items")
async def add_item(item: Item, request: Request) -> dict:
    SEEN.append({"request_id": request_id_var.get(), "query": dict(request.query_params)})
    return {"sku": item.sku, "quantity": item.quantity, "request_id": request_id_var.get()}


@ECHO.get("/slow")
async def slow() -> dict:
    await asyncio.sleep(30)
    return {}


@ECHO.get("/boom")
async def boom() -> dict:
    raise RuntimeError("the handler failed")


def host(name: str, tmp_path, *routers: APIRouter, **settings) -> ServiceHost:
    built = ServiceHost(ServiceSettings(service_name=name, port=free_port(), data_dir=tmp_path, **settings),
                        version="test", verifies_tokens=False)
    built.routes(*routers)
    return built


@pytest.fixture
def callee(tmp_path) -> ServiceHost:
    return host("callee", tmp_path, ECHO)


@pytest.fixture
async def session(callee):
    apps = LocalApps()
    apps.add(callee.settings.own_url(), callee.app)
    http = HttpSession()
    http.serve_in_process(apps)
    yield http
    await http.close()


async def test_a_call_reaches_the_app_in_process_through_its_middleware(callee, session):
    client = ServiceClient("callee", callee.settings.own_url(), session=session, breaker=None)
    token = request_id_var.set("caller-request-7")
    try:
        reply = await client.post("/items", json_body={"sku": "MUG-1", "quantity": 2}, params={"note": "x"})
    finally:
        request_id_var.reset(token)
    assert reply.status == 200, reply.body
    assert reply.body == {"sku": "MUG-1", "quantity": 2, "request_id": "caller-request-7"}
    assert reply.headers["x-request-id"] == "caller-request-7"  # the callee's edge middleware ran
    assert SEEN[-1]["query"] == {"note": "x"}
    # The callee's own metrics counted it, as if it had come over the network.
    assert callee.metrics.value("http_server_requests_total",
                                {"method": "POST", "route": "/items", "status": "200"}) == 1
    # What the callee set in its context stayed there.
    assert request_id_var.get() is None


async def test_bad_input_is_the_callees_problem_json(callee, session):
    client = ServiceClient("callee", callee.settings.own_url(), session=session, breaker=None)
    reply = await client.post("/items", json_body={"sku": "MUG-1"})
    assert reply.status == 422
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.body["status"] == 422


async def test_an_unhandled_error_is_a_500_answer_not_a_crash_of_the_caller(callee, session):
    client = ServiceClient("callee", callee.settings.own_url(), session=session, breaker=None, retries=0)
    reply = await client.get("/boom")
    assert reply.status == 500
    assert reply.body["status"] == 500


async def test_the_callers_timeout_cancels_the_call(callee, session):
    client = ServiceClient("callee", callee.settings.own_url(), session=session, breaker=None, retries=0,
                           timeout=0.2)
    with pytest.raises(ServiceUnavailable):
        await client.get("/slow")


async def test_a_url_not_in_the_process_goes_over_http(session):
    async def hello(_request):
        return web.json_response({"over": "http"})

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        reply = await ServiceClient("outside", f"http://127.0.0.1:{port}", session=session).get("/hello")
    finally:
        await runner.cleanup()
    assert reply.body == {"over": "http"}


async def test_a_group_serves_its_public_service_and_answers_the_others_in_process(tmp_path):
    public_router = APIRouter()
    inner = host("inner", tmp_path, ECHO)
    public = host("public", tmp_path, public_router)
    order: list[str] = []
    for part in (inner, public):
        part.on_start(lambda name=part.name: order.append(f"start {name}"))
        part.on_stop(lambda name=part.name: order.append(f"stop {name}"))
    calls = ServiceClient("inner", inner.settings.own_url(), session=public.http, breaker=None)

    @public_router.get("/relay")
    async def relay() -> dict:
        return (await calls.post("/items", json_body={"sku": "TEA-1", "quantity": 1})).body

    group = HostGroup(public, [inner])
    async with RunningApp(group.app, port=public.settings.port) as running:
        assert order == ["start inner", "start public"]
        api = ApiClient(running.url)
        assert (await api.get("/relay")).body["sku"] == "TEA-1"
        ready = await api.get("/ready")
        assert ready.status == 200
        # The inner service is not on any port of its own.
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", inner.settings.port)
    assert order == ["start inner", "start public", "stop public", "stop inner"]


async def test_the_answer_reads_like_aiohttps(callee, session):
    base = callee.settings.own_url()
    async with session.get().get(base + "/boom") as answer:  # problem+json is JSON, as aiohttp has it
        assert answer.status == 500 and (await answer.json())["status"] == 500
        with pytest.raises(aiohttp.ClientResponseError):
            answer.raise_for_status()
    async with session.get().get(base + "/docs") as page:  # a page is not
        assert page.status == 200 and "swagger" in (await page.text()).lower()
        with pytest.raises(aiohttp.ContentTypeError):
            await page.json()
