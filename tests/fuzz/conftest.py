"""One whole system for the schemathesis run, started the way `microshop up` starts it (separate
processes on free ports, real NATS, SQLite), in a data directory of its own: the fuzzer creates
accounts, products, stock and orders that no other test should see."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest_asyncio
from microshop_chassis.testing import ApiClient
from microshop_cli.system import System, SystemConfig

# The password of the fuzzer's customer: long and not a common one, so a password policy keeps it.
# Not made of the name "Fuzz Customer": users refuses such passwords (issue 8).
CUSTOMER_PASSWORD = "orchid-lantern-7d1c9e"


@dataclass(frozen=True)
class FuzzedSystem:
    system: System
    # Bearer token per role; "anonymous" sends none.
    tokens: dict[str, str | None]

    def url(self, name: str) -> str:
        return self.system.url(name)


async def _login(users: ApiClient, email: str, password: str) -> str:
    reply = await users.post("/login", json={"email": email, "password": password})
    assert reply.status == 200, f"login of {email} failed: {reply.status} {reply.body}"
    return reply.body["access_token"]


async def _tokens(system: System) -> dict[str, str | None]:
    users = ApiClient(system.url("users"))
    email = f"fuzz-{uuid.uuid4().hex[:10]}@example.com"
    registered = await users.post("/register", json={"email": email, "password": CUSTOMER_PASSWORD,
                                                      "name": "Fuzz Customer"})
    # 201 today; 202 once registration answers alike for new and existing addresses (issue 8).
    assert registered.status == 202, registered.body
    service = await users.post("/service-tokens", json={"service": "orders",
                                                         "secret": system.env["MICROSHOP_SERVICE_SECRET"]})
    assert service.status == 200, service.body
    return {
        "anonymous": None,
        "customer": await _login(users, email, CUSTOMER_PASSWORD),
        "admin": await _login(users, system.admin_email, system.admin_password),
        "service": service.body["access_token"],
    }


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def fuzzed_system(tmp_path_factory):
    config = SystemConfig.with_free_ports(tmp_path_factory.mktemp("fuzz"), extra_env={"MICROSHOP_LOG_LEVEL": "INFO"})
    async with System(config) as system:
        yield FuzzedSystem(system, await _tokens(system))

