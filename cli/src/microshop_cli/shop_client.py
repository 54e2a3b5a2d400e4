"""The few calls to a running shop that the launcher's tools share (bench, the chaos load and run,
verify): log in, register a customer, top up the demo catalog's stock."""

from __future__ import annotations

import uuid
from collections.abc import Collection

import aiohttp

from .catalog import DEMO_CATALOG


async def login(http: aiohttp.ClientSession, login_url: str, email: str, password: str) -> str:
    """An access token from users' ``/login`` (through the gateway or straight to users)."""
    async with http.post(login_url, json={"email": email, "password": password}) as reply:
        if reply.status != 200:
            raise RuntimeError(f"login as {email} failed: HTTP {reply.status}")
        return (await reply.json())["access_token"]


async def new_customer(http: aiohttp.ClientSession, gateway: str, prefix: str) -> str:
    """Register a fresh customer through the gateway and return its token."""
    # users refuses a password containing the name ("Bench"), so the password is not made of it.
    email, password = f"{prefix}-{uuid.uuid4().hex[:12]}@example.com", f"pw-{uuid.uuid4().hex[:16]}"
    async with http.post(f"{gateway}/api/users/register",
                         json={"email": email, "password": password, "name": prefix.title()}) as reply:
        if reply.status != 202:  # the same answer for a new and a taken e-mail
            raise RuntimeError(f"registering a {prefix} customer failed: HTTP {reply.status}")
    return await login(http, f"{gateway}/api/users/login", email, password)


async def stock_up(http: aiohttp.ClientSession, gateway: str, admin_token: str, units: int, *,
                   leave_out: Collection[str] = ()) -> list[str]:
    """Add ``units`` to every demo product the shop has (but ``leave_out``); return their skus."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with http.get(f"{gateway}/api/inventory/stock", params={"limit": "1000"}, headers=headers) as reply:
        stock = {item["sku"]: item["on_hand"] for item in (await reply.json())["items"]}
    skus = [item.sku for item in DEMO_CATALOG if item.sku in stock and item.sku not in leave_out]
    for sku in skus:
        async with http.put(f"{gateway}/api/inventory/stock/{sku}", headers=headers,
                            json={"on_hand": stock[sku] + units}) as reply:
            if reply.status != 200:
                raise RuntimeError(f"stocking {sku} failed: HTTP {reply.status}")
    return skus
