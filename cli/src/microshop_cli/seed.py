"""Create the demo catalog through the gateway, only for products that do not exist yet,
so restarting the system never resets stock that orders have used."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp

from .catalog import DEMO_CATALOG, CatalogItem
from .errors import SeedError

# A gateway that is up may still answer these while a service behind it settles: retry them.
TRANSIENT_STATUSES = {502, 503, 504}


@dataclass
class SeedReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


async def seed_catalog(
    gateway_url: str, *, email: str, password: str, catalog: Iterable[CatalogItem] = DEMO_CATALOG,
    retry_for: float = 10.0,
) -> SeedReport:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        gateway = _Gateway(session, gateway_url.rstrip("/"), retry_for)
        status, answer = await gateway.call("POST", "/api/users/login", {"email": email, "password": password})
        if status != 200 or not isinstance(answer, dict) or "access_token" not in answer:
            raise SeedError(f"admin login as {email} failed: HTTP {status} {answer}")
        gateway.token = answer["access_token"]
        report = SeedReport()
        for item in catalog:
            sku = quote(item.sku, safe="")
            status, answer = await gateway.call("GET", f"/api/inventory/products/{sku}")
            if status == 200:
                report.existing.append(item.sku)
                continue
            if status != 404:
                raise SeedError(f"GET /api/inventory/products/{item.sku}: HTTP {status} {answer}")
            product = {"name": item.name, "description": item.description, "price_cents": item.price_cents,
                       "currency": item.currency}
            await gateway.expect_success("PUT", f"/api/inventory/products/{sku}", product)
            await gateway.expect_success("PUT", f"/api/inventory/stock/{sku}", {"on_hand": item.on_hand})
            report.created.append(item.sku)
    return report


class _Gateway:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, retry_for: float) -> None:
        self.session = session
        self.base_url = base_url
        self.retry_for = retry_for
        self.token: str | None = None

    async def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                async with self.session.request(method, self.base_url + path, json=body, headers=headers) as reply:
                    answer = _decode(await reply.text())
                    if reply.status not in TRANSIENT_STATUSES or time.monotonic() > deadline:
                        return reply.status, answer
            except (aiohttp.ClientError, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise SeedError(f"{method} {path} failed: {exc!r}") from exc
            await asyncio.sleep(0.1)

    async def expect_success(self, method: str, path: str, body: dict) -> None:
        status, answer = await self.call(method, path, body)
        if not 200 <= status < 300:
            raise SeedError(f"{method} {path}: HTTP {status} {answer}")


def _decode(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text
