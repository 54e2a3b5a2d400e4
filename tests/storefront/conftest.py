"""A whole system (microshop_cli.system.System, as `microshop up` starts it, the storefront
included) and a real Chromium (Debian's package, driven by Playwright: Playwright's own browser
download does not work here) for the storefront's pages. One system per module, on free ports
and a temporary data dir; the browser's contexts are fresh per test (no cookie carried over)."""

from __future__ import annotations

import uuid

import aiohttp
import pytest_asyncio
from microshop_chassis.testing import ApiClient
from microshop_cli.shop_client import login
from microshop_cli.system import System, SystemConfig

# Checkouts answer PENDING at once (orders waits 0 s for the saga), so every outcome reaches the
# order page by its own polling; the recovery loop is quick for the same reason.
TEST_ENV = {"MICROSHOP_ORDERS_CHECKOUT_WAIT_SECONDS": "0", "MICROSHOP_ORDERS_RECOVERY_INTERVAL_SECONDS": "0.2",
            "MICROSHOP_LOG_LEVEL": "INFO"}


class Shop:
    """The running system as the tests see it: the storefront's URL, the gateway's API and the
    card processor's admin API."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.url = system.url("storefront")
        self.gateway_url = system.url("gateway")
        self.card_processor = ApiClient(system.url("card-processor"))

    async def new_account(self) -> tuple[str, str, str]:
        """A registered customer (through the gateway): e-mail, password and an API token."""
        email, password = f"sf-{uuid.uuid4().hex[:12]}@example.com", f"pw-{uuid.uuid4().hex[:16]}"
        api = ApiClient(self.gateway_url)
        reply = await api.post("/api/users/register", json={"email": email, "password": password, "name": "Grace"})
        assert reply.status == 202, reply.body
        async with aiohttp.ClientSession() as http:
            token = await login(http, f"{self.gateway_url}/api/users/login", email, password)
        return email, password, token

    def api(self, token: str) -> ApiClient:
        return ApiClient(self.gateway_url, token)

    async def card_processor_faults(self, **faults: float) -> None:
        reply = await self.card_processor.put("/_admin/config", json=faults)
        assert reply.status == 200, reply.body


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser, shop):
    context = await browser.new_context(viewport={"width": 1200, "height": 900}, base_url=shop.url)
    context.set_default_timeout(15_000)
    try:
        yield await context.new_page()
    finally:
        await context.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shop(browser, tmp_path_factory):  # the browser first: without one, start no system
    config = SystemConfig.with_free_ports(tmp_path_factory.mktemp("storefront-shop"), extra_env=TEST_ENV)
    async with System(config) as system:
        yield Shop(system)
