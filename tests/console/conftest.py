"""A whole system (microshop_cli.system.System, as `microshop up` starts it) and a real Chromium
(Debian's package, driven by Playwright: Playwright's own browser download does not work here)
for the operations console that the telemetry component serves."""

from __future__ import annotations

import aiohttp
import pytest_asyncio
from microshop_chassis.testing import ApiClient
from microshop_cli.shop_client import new_customer
from microshop_cli.system import System, SystemConfig

# Every trace kept: the tests follow one order's traces, and their polling (and the saga's retries
# every 0.2 s) can pass the default sampler's ~5 new traces a second (docs/operations.md).
TEST_ENV = {"MICROSHOP_ORDERS_RECOVERY_INTERVAL_SECONDS": "0.2", "MICROSHOP_LOG_LEVEL": "INFO",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on"}


class Shop:
    """The running system: the gateway as a customer sees it, the card processor's admin API, and
    the console's address."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.gateway_url = system.url("gateway")
        self.console_url = system.url("telemetry")
        self.telemetry = ApiClient(self.console_url)
        self.card_processor = ApiClient(system.url("card-processor"))

    async def new_customer(self) -> str:
        async with aiohttp.ClientSession() as http:
            return await new_customer(http, self.gateway_url, "console")

    def api(self, token: str) -> ApiClient:
        return ApiClient(self.gateway_url, token)

    async def card_processor_faults(self, **faults: float) -> None:
        reply = await self.card_processor.put("/_admin/config", json=faults)
        assert reply.status == 200, reply.body


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser):
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    try:
        yield await context.new_page()
    finally:
        await context.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shop(browser, tmp_path_factory):  # the browser first: without one, start no system
    # With chaos proxies, for the chaos page; the other pages see the same system through them.
    config = SystemConfig.with_free_ports(tmp_path_factory.mktemp("console-shop"), extra_env=TEST_ENV,
                                          chaos_proxies=True)
    async with System(config) as system:
        yield Shop(system)
