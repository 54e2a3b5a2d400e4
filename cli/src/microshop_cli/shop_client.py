"""The few calls to a running shop that the launcher's tools share (bench, the chaos load and run,
verify): log in, register a customer, top up the demo catalog's stock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection
from typing import Any

import aiohttp

from .catalog import DEMO_CATALOG

# The card processor simulator's test card that is always approved (sims/card-processor).
APPROVED_CARD = {"card_number": "4242424242424242", "expiry_month": 12, "expiry_year": 2035, "cvc": "123"}

# users refuses at once what its hashing queue cannot take (503) and what its rate limits do not
# allow (429), each with Retry-After: a burst of sign-ups (bench's 32 customers) comes back then.
_COME_BACK = {429, 503}
_ATTEMPTS = 20
_LONGEST_WAIT = 5.0


async def _post_until_accepted(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST ``body``, waiting as told and posting again while the answer is 429 or 503."""
    for attempt in range(_ATTEMPTS):
        async with http.post(url, json=body) as reply:
            if reply.status not in _COME_BACK or attempt == _ATTEMPTS - 1:
                return reply.status, await reply.json(content_type=None)
            wait = min(_LONGEST_WAIT, float(reply.headers.get("Retry-After", "1")))
        await asyncio.sleep(wait)
    raise AssertionError("unreachable: the last attempt returns")


async def login(http: aiohttp.ClientSession, login_url: str, email: str, password: str) -> str:
    """An access token from users' ``/login`` (through the gateway or straight to users)."""
    status, body = await _post_until_accepted(http, login_url, {"email": email, "password": password})
    if status != 200:
        raise RuntimeError(f"login as {email} failed: HTTP {status}")
    return body["access_token"]


async def new_customer(http: aiohttp.ClientSession, gateway: str, prefix: str) -> str:
    """Register a fresh customer through the gateway and return its token."""
    # users refuses a password containing the name ("Bench"), so the password is not made of it.
    email, password = f"{prefix}-{uuid.uuid4().hex[:12]}@example.com", f"pw-{uuid.uuid4().hex[:16]}"
    status, _ = await _post_until_accepted(http, f"{gateway}/api/users/register",
                                           {"email": email, "password": password, "name": prefix.title()})
    if status != 202:  # the same answer for a new and a taken e-mail
        raise RuntimeError(f"registering a {prefix} customer failed: HTTP {status}")
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
