"""The launcher's tools come back when users says so (429/503 with Retry-After): a burst of
sign-ups (bench registers one customer per connection at once) meets users' bounded hashing
queue, which refuses what it cannot take instead of queueing it."""

import aiohttp
import pytest
from aiohttp import web
from microshop_cli.components import free_ports
from microshop_cli.shop_client import new_customer


class BusyUsers:
    """users behind a gateway, refusing the first ``busy`` calls of each kind."""

    def __init__(self, busy: int, status: int = 503) -> None:
        self.busy = {"register": busy, "login": busy}
        self.status = status
        self.calls = {"register": 0, "login": 0}
        app = web.Application()
        app.add_routes([web.post("/api/users/register", self.register), web.post("/api/users/login", self.login)])
        self.runner = web.AppRunner(app)
        self.url = ""

    async def start(self) -> None:
        await self.runner.setup()
        port = free_ports(["gateway"])["gateway"]
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    def _refused(self, kind: str) -> web.Response | None:
        self.calls[kind] += 1
        if self.calls[kind] <= self.busy[kind]:
            return web.json_response({"type": "about:blank", "status": self.status}, status=self.status,
                                     headers={"Retry-After": "0"}, content_type="application/problem+json")
        return None

    async def register(self, request: web.Request) -> web.Response:
        return self._refused("register") or web.json_response({"status": "accepted"}, status=202)

    async def login(self, request: web.Request) -> web.Response:
        return self._refused("login") or web.json_response({"access_token": "t", "token_type": "bearer"})


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize("status", [503, 429])
async def test_a_customer_is_registered_after_users_asked_to_come_back(http, status):
    users = BusyUsers(busy=3, status=status)
    await users.start()
    try:
        assert await new_customer(http, users.url, "bench") == "t"
        assert users.calls == {"register": 4, "login": 4}
    finally:
        await users.runner.cleanup()


async def test_it_gives_up_when_users_stays_busy(http):
    users = BusyUsers(busy=1000)
    await users.start()
    try:
        with pytest.raises(RuntimeError, match="HTTP 503"):
            await new_customer(http, users.url, "bench")
        assert users.calls["register"] == 20
    finally:
        await users.runner.cleanup()
