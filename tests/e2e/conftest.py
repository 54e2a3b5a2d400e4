"""The whole system, started with the same code as `microshop up` (microshop_cli.system.System):
every service, NATS, the card processor and the mail catcher as separate processes on free ports,
in a temporary data directory. Runs once on SQLite and once on PostgreSQL (a database per service)."""

from __future__ import annotations

import asyncio
import uuid

import pytest_asyncio
from microshop_chassis.services import names
from microshop_chassis.testing import ApiClient, create_postgres_database, require_postgres
from microshop_cli.system import System, SystemConfig

RELATIONAL_SERVICES = names(storage="sql")

# Short intervals so background work (saga recovery) is observed quickly in tests.
TEST_ENV = {
    "MICROSHOP_ORDERS_RECOVERY_INTERVAL_SECONDS": "0.2",
    "MICROSHOP_LOG_LEVEL": "INFO",
    # Every trace kept: tests look for one checkout's every span, and their polling through the
    # gateway alone can pass the default sampler's ~5 new traces a second (docs/operations.md).
    "OTEL_TRACES_SAMPLER": "parentbased_always_on",
}


class Shop:
    """The running system, seen the way a client sees it: through the gateway."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.gateway = ApiClient(system.url("gateway"))
        self.card_processor = ApiClient(system.url("card-processor"))
        self.mail = ApiClient(system.url("mail-catcher"))
        self.admin_token = ""

    @property
    def monolith(self) -> bool:
        return self.system.config.monolith

    def api(self, token: str | None = None) -> ApiClient:
        return ApiClient(self.system.url("gateway"), token)

    async def login(self, email: str, password: str) -> str:
        reply = await self.gateway.post("/api/users/login", json={"email": email, "password": password})
        assert reply.status == 200, reply.body
        return reply.body["access_token"]

    async def new_customer(self) -> tuple[str, str]:
        """Register a fresh customer; return (token, email)."""
        email = f"c-{uuid.uuid4().hex[:10]}@example.com"
        reply = await self.gateway.post("/api/users/register",
                                        json={"email": email, "password": "correct-horse", "name": "Test Customer"})
        assert reply.status == 202, reply.body
        return await self.login(email, "correct-horse"), email


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres", "monolith"])
async def shop(request, tmp_path_factory):
    """``monolith``: the same walk against `microshop up --monolith` (SQLite): the six services and
    the gateway in one process, on the gateway's address."""
    env = dict(TEST_ENV)
    drops = []
    if request.param == "postgres":
        # These helpers run their own event loop, so they run in a thread beside this one.
        await asyncio.to_thread(require_postgres)
        for service in RELATIONAL_SERVICES:
            url, drop = await asyncio.to_thread(create_postgres_database)
            env[f"MICROSHOP_{service.upper()}_DATABASE_URL"] = url
            drops.append(drop)
    config = SystemConfig.with_free_ports(tmp_path_factory.mktemp(f"shop-{request.param}"), extra_env=env,
                                          monolith=request.param == "monolith")
    try:
        async with System(config) as system:
            shop = Shop(system)
            shop.admin_token = await shop.login(system.admin_email, system.admin_password)
            yield shop
    finally:
        for drop in drops:
            await asyncio.to_thread(drop)
