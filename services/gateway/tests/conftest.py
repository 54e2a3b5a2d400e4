"""The gateway served by a real uvicorn, in front of small aiohttp.web fakes of two services.

Fakes are right here: what is under test is the proxy, and a fake shows exactly what arrived.
"""

import asyncio
import gzip
import json
from collections import Counter

import pytest
from aiohttp import web

from microshop_chassis.testing import RunningApp, free_port
from microshop_gateway.bootstrap import build
from microshop_gateway.settings import SERVICES, GatewaySettings

UPSTREAM_TIMEOUT = 1.0


class AnyRoute:
    """Lets everything through: the proxy tests are about forwarding, not about what is public."""

    def matches(self, method: str, path: str) -> bool:
        return True


OPEN_API = {name: (AnyRoute(),) for name in SERVICES}
GZIPPED_TEXT = b"microshop " * 1000


class FakeService:
    """A stand-in for one service: real HTTP on a free port; counts the requests it received."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hits: Counter[str] = Counter()
        self.release_slow = asyncio.Event()
        self.health_hangs = False
        self.app = web.Application(client_max_size=8 * 1024 * 1024)
        self.app.router.add_get("/health", self.health)
        self.app.router.add_route("*", "/echo/{tail:.*}", self.echo)
        self.app.router.add_post("/raw", self.raw)
        self.app.router.add_get("/problem", self.problem)
        self.app.router.add_get("/slow", self.slow)
        self.app.router.add_route("*", "/reset", self.reset)
        self.app.router.add_get("/not-http", self.not_http)
        self.app.router.add_get("/hop-by-hop", self.hop_by_hop)
        self.app.router.add_get("/gzipped", self.gzipped)
        self.app.router.add_post("/created", self.created)
        self.runner = web.AppRunner(self.app)

    async def start(self) -> "FakeService":
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        self.release_slow.set()
        await self.runner.cleanup()

    async def health(self, request: web.Request) -> web.Response:
        if self.health_hangs:
            await self.release_slow.wait()
        return web.json_response({"status": "ok", "service": self.name, "version": "9.9.9"})

    async def echo(self, request: web.Request) -> web.Response:
        """Describes the request as it arrived; replies with the status asked for in X-Echo-Status."""
        path, _, query = request.raw_path.partition("?")
        self.hits[path] += 1
        described = {
            "service": self.name,
            "method": request.method,
            "path": path,
            "query": query,
            "headers": [[name.decode("latin-1").lower(), value.decode("latin-1")]
                        for name, value in request.raw_headers],
            "body": (await request.read()).decode(),
        }
        response = web.Response(
            text=json.dumps(described), content_type="application/json",
            status=int(request.headers.get("X-Echo-Status", "200")),
        )
        response.headers["X-Upstream"] = self.name
        response.headers.add("Set-Cookie", "first=1; Path=/")
        response.headers.add("Set-Cookie", "second=2; Path=/")
        return response

    async def raw(self, request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), status=201, content_type="application/octet-stream")

    async def problem(self, request: web.Request) -> web.Response:
        body = {"type": "https://microshop.dev/problems/out-of-stock", "title": "Out of stock", "status": 409,
                "detail": "Only 2 left.", "sku": "MUG-1"}
        return web.Response(text=json.dumps(body, indent=1), status=409, content_type="application/problem+json")

    async def slow(self, request: web.Request) -> web.Response:
        await self.release_slow.wait()  # set when the test ends: slower than any timeout under test
        return web.json_response({"late": True})

    async def reset(self, request: web.Request) -> web.Response:
        self.hits["/reset"] += 1
        request.transport.close()  # drop the connection without an answer
        return web.Response()

    async def not_http(self, request: web.Request) -> web.Response:
        request.transport.write(b"SMTP ready\r\n\r\n")  # a reply that is not HTTP
        request.transport.close()
        return web.Response()

    async def hop_by_hop(self, request: web.Request) -> web.Response:
        response = web.Response(text="hop")
        response.headers["Connection"] = "X-Hop-Only"
        response.headers["X-Hop-Only"] = "connection-scoped"
        response.headers["Keep-Alive"] = "timeout=5"
        response.headers["Proxy-Authenticate"] = "Basic"
        response.headers["X-End-To-End"] = "kept"
        return response

    async def created(self, request: web.Request) -> web.Response:
        """Redirects to wherever the test asks (X-Location), as a 201 Created or a redirect."""
        status = int(request.headers.get("X-Echo-Status", "201"))
        return web.Response(status=status, headers={"Location": request.headers["X-Location"]})

    async def gzipped(self, request: web.Request) -> web.Response:
        response = web.Response(body=gzip.compress(GZIPPED_TEXT, mtime=0), content_type="text/plain")
        response.headers["Content-Encoding"] = "gzip"
        return response


@pytest.fixture
async def fake_users():
    fake = await FakeService("users").start()
    yield fake
    await fake.stop()


@pytest.fixture
async def fake_inventory():
    fake = await FakeService("inventory").start()
    yield fake
    await fake.stop()


@pytest.fixture
def settings(fake_users, fake_inventory, tmp_path) -> GatewaySettings:
    # users and inventory answer; the other services point at ports where nothing listens.
    down = {f"{name}_url": f"http://127.0.0.1:{free_port()}" for name in SERVICES}
    return GatewaySettings(
        **{**down, "users_url": fake_users.url, "inventory_url": fake_inventory.url},
        upstream_timeout=UPSTREAM_TIMEOUT, data_dir=tmp_path,
        # Below the (short) upstream timeout, so a client's X-Request-Timeout can still shorten it.
        min_request_timeout=0.1,
    )


@pytest.fixture
async def gateway(settings):
    host = build(settings, public_api=OPEN_API)
    async with RunningApp(host.app) as running:
        running.host = host  # its tracer provider, metrics...
        yield running
