"""The system's health as the gateway sees it: every service's /health, probed concurrently."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from microshop_chassis.http_client import HttpSession

from .proxy import describe_error


def system_health(upstreams: dict[str, str], timeout: float,
                  session: HttpSession) -> Callable[[], Awaitable[dict[str, Any]]]:
    """What the gateway adds to its own /health body."""

    async def report() -> dict[str, Any]:
        results = await asyncio.gather(*(probe(session, base_url, timeout) for base_url in upstreams.values()))
        services = dict(zip(upstreams, results, strict=True))
        all_up = all(result["status"] == "ok" for result in services.values())
        return {"status": "ok" if all_up else "degraded", "services": services}

    return report


async def probe(session: HttpSession, base_url: str, time_limit: float) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        async with session.get().get(
            base_url + "/health", timeout=aiohttp.ClientTimeout(total=time_limit)
        ) as response:
            body = await response.json(content_type=None) if response.status == 200 else None
            status = response.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # ValueError: a body not JSON
        return _down(start, describe_error(exc))
    if status != 200:
        return _down(start, f"HTTP {status}")
    version = body.get("version") if isinstance(body, dict) else None
    return {"status": "ok", "version": version, "latency_ms": _since(start)}


def _down(start: float, error: str) -> dict[str, Any]:
    return {"status": "down", "version": None, "latency_ms": _since(start), "error": error}


def _since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
