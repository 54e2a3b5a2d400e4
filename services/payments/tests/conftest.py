from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from microshop_card_processor.app import Config
from microshop_card_processor.app import create_app as create_processor_app
from microshop_chassis.testing import ApiClient, RunningApp, TokenMint
from microshop_payments.bootstrap import build
from microshop_payments.settings import PaymentsSettings


@dataclass
class CardProcessorSim:
    """The card-processor simulator on a real port, with its admin hooks."""

    url: str
    admin: ApiClient

    async def configure(self, **knobs) -> None:
        assert (await self.admin.put("/_admin/config", json=knobs)).status == 200

    async def charges(self) -> list[dict]:
        return (await self.admin.get("/_admin/charges")).body["items"]

    async def stats(self) -> dict:
        return (await self.admin.get("/_admin/stats")).body


@pytest.fixture
async def processor():
    server = TestServer(create_processor_app(Config()))
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    yield CardProcessorSim(url=url, admin=ApiClient(url))
    await server.close()


class ResponseLosingProxy:
    """Sits between payments and the processor. While ``lose_responses`` is set, each request
    reaches the processor and takes effect, but the connection is cut before the answer gets
    back: the caller cannot know whether its charge happened. ``lose_only`` limits that to paths
    starting with it (e.g. "/v1/refunds")."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.lose_responses = False
        self.lose_only: str | None = None

    async def forward(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "idempotency-key")}
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, self.target + request.path_qs, data=await request.read(),
                                       headers=headers) as answer:
                body, status, content_type = await answer.read(), answer.status, answer.content_type
        if self.lose_responses and (self.lose_only is None or request.path.startswith(self.lose_only)):
            request.transport.abort()
        return web.Response(body=body, status=status, content_type=content_type)


@pytest.fixture
async def lossy_link(processor):
    proxy = ResponseLosingProxy(processor.url)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.forward)
    server = TestServer(app)
    await server.start_server()
    proxy.url = str(server.make_url("")).rstrip("/")
    yield proxy
    await server.close()


@pytest.fixture
def settings(database_url, nats_server, tmp_path, processor) -> PaymentsSettings:
    return PaymentsSettings(
        database_url=database_url, nats_url=nats_server.url, data_dir=tmp_path,
        card_processor_url=processor.url, card_processor_timeout=5.0,
    )


@pytest.fixture
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture
async def payments(settings, mint):
    async with RunningApp(build(settings, verifier=mint.verifier()).app) as running:
        yield running


@pytest.fixture
def as_service(payments, mint) -> ApiClient:
    """What orders calls payments with."""
    return ApiClient(payments.url, mint.token("service:orders", role="service"))


@pytest.fixture
def as_admin(payments, mint) -> ApiClient:
    return ApiClient(payments.url, mint.token(role="admin"))
