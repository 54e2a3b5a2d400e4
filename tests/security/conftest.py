"""The OWASP API Security Top 10 (2023) suite runs against one whole system for the session,
started the way `microshop up` starts it (microshop_cli.system.System: separate processes on free
ports, real NATS, SQLite) in a data directory of its own. Tests reach it as a client would,
through the gateway, and as someone on the host would, on each service's own port.

Every account the suite needs is made and logged in once, when the system starts: the login
rate-limit test later spends one account's failed-login quota and must not lock out the others."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import pytest_asyncio
from microshop_chassis.auth import ALGORITHM, AUDIENCE, ISSUER
from microshop_chassis.errors import PROBLEM_BASE
from microshop_chassis.testing import ApiClient
from microshop_cli.system import System, SystemConfig

PASSWORD = "sturdy-security-suite-9c2e"
APPROVED_CARD = {"card_number": "4242424242424242", "expiry_month": 12, "expiry_year": 2031, "cvc": "123"}
DECLINED_CARDS = ("4000000000000002", "4000000000009995")
SKU = "MUG-STONEWARE-12"
PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Account:
    email: str
    token: str
    id: str


@dataclass
class SecuredSystem:
    system: System
    admin: Account
    service_token: str
    customers: dict[str, Account] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.system.config.data_dir

    def gateway(self, token: str | None = None) -> ApiClient:
        return ApiClient(self.system.url("gateway"), token)

    def direct(self, service: str, token: str | None = None) -> ApiClient:
        """The service on its own port, past the gateway (what anyone on the host can reach)."""
        return ApiClient(self.system.url(service), token)

    def url(self, name: str) -> str:
        return self.system.url(name)

    # Shared by the test modules (conftest is not importable under --import-mode=importlib).
    password = PASSWORD
    approved_card = APPROVED_CARD
    declined_cards = DECLINED_CARDS
    sku = SKU

    async def order(self, token: str, *, card: dict | None = None, quantity: int = 1, **extra):
        body = {"items": [{"sku": SKU, "quantity": quantity}], "payment": card or APPROVED_CARD, **extra}
        return await self.gateway(token).post("/api/orders", json=body,
                                              headers={"Idempotency-Key": str(uuid.uuid4())})

    @staticmethod
    def assert_problem(reply, status: int, slug: str | None = None) -> None:
        """An RFC 9457 answer: the status, problem+json, the same status in the body, the type."""
        assert reply.status == status, f"expected {status}, got {reply.status}: {reply.body}"
        content_type = reply.headers.get("Content-Type", "")
        assert content_type.startswith(PROBLEM_JSON), f"{reply.status} answered as {content_type!r}: {reply.body}"
        assert reply.body["status"] == status, reply.body
        if slug is not None:
            assert reply.body["type"] == PROBLEM_BASE + slug, reply.body

    def signing_key(self) -> tuple[str, object]:
        """(kid, private key) of users' newest signing key, read from its key file: the suite forges
        tokens whose only defect is the one under test, so a refusal can only come from that defect."""
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        keys = sorted((self.data_dir / "keys" / "users").glob("*.pem"), key=lambda path: path.stat().st_mtime)
        assert keys, f"no signing key file under {self.data_dir / 'keys' / 'users'}"
        return keys[-1].stem, load_pem_private_key(keys[-1].read_bytes(), password=None)

    def forge(self, *, drop: tuple[str, ...] = (), headers: dict | None = None, **claims) -> str:
        """A token signed by users' real key with the usual claims, minus ``drop``, plus ``claims``."""
        kid, key = self.signing_key()
        now = int(time.time())
        body = {"sub": self.admin.id, "role": "admin", "iss": ISSUER, "aud": AUDIENCE, "iat": now,
                "exp": now + 300, "email": self.admin.email, **claims}
        for name in drop:
            body.pop(name, None)
        return jwt.encode(body, key, algorithm=ALGORITHM, headers={"kid": kid, **(headers or {})})

    def broker_passwords(self) -> dict[str, str]:
        """The launcher's per-user NATS passwords (issue 8: one broker user per service)."""
        path = self.data_dir / "secrets" / "nats-passwords.json"
        assert path.exists(), "no broker users: NATS accepts anyone (finding 2)"
        return json.loads(path.read_text())

    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.system.port('nats')}"


async def _account(users: ApiClient, email: str, password: str) -> Account:
    login = await users.post("/login", json={"email": email, "password": password})
    assert login.status == 200, f"login of {email}: {login.status} {login.body}"
    token = login.body["access_token"]
    me = await users.get("/me", token=token)
    assert me.status == 200, me.body
    return Account(email, token, me.body["id"])


async def _customer(users: ApiClient, label: str) -> Account:
    email = f"{label}-{uuid.uuid4().hex[:8]}@example.com"
    registered = await users.post("/register", json={"email": email, "password": PASSWORD, "name": label.title()})
    # 201 before issue 8; 202 once registration answers alike for new and existing addresses.
    assert registered.status == 202, registered.body
    return await _account(users, email, PASSWORD)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def secured(tmp_path_factory):
    config = SystemConfig.with_free_ports(tmp_path_factory.mktemp("security"),
                                          extra_env={"MICROSHOP_LOG_LEVEL": "INFO"})
    async with System(config) as system:
        users = ApiClient(system.url("users"))
        admin = await _account(users, system.admin_email, system.admin_password)
        service = await users.post("/service-tokens", json={"service": "orders",
                                                             "secret": system.env["MICROSHOP_SERVICE_SECRET"]})
        assert service.status == 200, service.body
        secured = SecuredSystem(system, admin, service.body["access_token"])
        for label in ("alice", "bob", "mallory", "carol"):
            secured.customers[label] = await _customer(users, label)
        yield secured
