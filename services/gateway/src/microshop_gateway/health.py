"""The system's health as the gateway sees it: every service's /health, probed concurrently."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from microshop_chassis.discovery import Endpoints, Replicas, as_endpoints
from microshop_chassis.http_client import HttpSession

from .proxy import describe_error


def system_health(upstreams: dict[str, Endpoints | str], timeout: float,
                  session: HttpSession) -> Callable[[], Awaitable[dict[str, Any]]]:
    """What the gateway adds to its own /health body: per service, every live replica probed
    (``replicas``), and the service's ``status`` (``ok``: all answer; ``degraded``: some do) and
    ``version`` (two, comma-separated, while a rollout is under way)."""

    async def report() -> dict[str, Any]:
        services = dict(zip(upstreams, await asyncio.gather(
            *(service_health(session, as_endpoints(target), timeout) for target in upstreams.values())),
            strict=True))
        all_up = all(result["status"] == "ok" for result in services.values())
        return {"status": "ok" if all_up else "degraded", "services": services}

    return report


async def service_health(session: HttpSession, endpoints: Endpoints, time_limit: float) -> dict[str, Any]:
    urls = endpoints.urls() if isinstance(endpoints, Replicas) else []
    replicas = await asyncio.gather(*(probe(session, url, time_limit) for url in urls or [endpoints.pick()]))
    up = [replica for replica in replicas if replica["status"] == "ok"]
    status = "ok" if len(up) == len(replicas) else "degraded" if up else "down"
    versions = sorted({replica["version"] for replica in up if replica["version"]})
    summary = {**(replicas[0] if len(replicas) == 1 else {"latency_ms": max(r["latency_ms"] for r in replicas)}),
               "status": status, "version": ", ".join(versions) or None}
    return {**summary, "replicas": replicas} if urls else summary


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
    body = body if isinstance(body, dict) else {}
    return {"status": "ok", "version": body.get("version"), "instance": body.get("instance"),
            "latency_ms": _since(start)}


def _down(start: float, error: str) -> dict[str, Any]:
    # No address: the gateway's /health is public, and where a service runs is not.
    return {"status": "down", "version": None, "latency_ms": _since(start), "error": error}


def _since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
