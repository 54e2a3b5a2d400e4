"""What ``microshop status`` reports: each component's health, checked live (1 s timeout)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp

from .bench_proc import FORK_SERVER, ProcessTrees

PROBE_TIMEOUT = 1.0


@dataclass
class ComponentStatus:
    name: str
    pid: int | None
    port: int | None
    url: str | None
    health: str  # "ok" or "down"
    version: str | None
    restarts: int
    uptime_seconds: float | None
    # The circuit breaker of each downstream this component calls, as it reports it in /health.
    circuit_breakers: dict[str, str] = field(default_factory=dict)
    # Its database: {"kind": "postgresql", "database": "microshop_orders", ...}; never a password.
    database: dict | None = None
    # The PSS of its process and of the workers it started (shared pages split among the processes
    # sharing them); None if gone.
    pss_mb: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


async def check_all(processes: dict[str, dict], databases: dict[str, dict] | None = None) -> list[ComponentStatus]:
    """Probe every component of a state.json's ``processes`` at once (``databases``: its own, per name)."""
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
    databases = databases or {}
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return list(await asyncio.gather(*(_check(session, name, info, databases.get(info.get("service") or name))
                                           for name, info in processes.items())))


def measure_memory(components: list[ComponentStatus], fork_server_pid: int | None) -> float | None:
    """Set each component's ``pss_mb``: the PSS of its process and of its descendants that are not
    components themselves (a monolith's workers are its own; the fork server's children are
    components); None when gone (or not ours to read). Returns the fork server's own, if any."""
    pids = {component.name: component.pid for component in components if component.pid}
    if fork_server_pid:
        pids[FORK_SERVER] = fork_server_pid
    memory = {name: round(mb, 1) if mb > 0 else None for name, mb in ProcessTrees(pids).pss_mb().items()}
    for component in components:
        component.pss_mb = memory.get(component.name)
    return memory.get(FORK_SERVER)


async def _check(session: aiohttp.ClientSession, name: str, info: dict, database: dict | None) -> ComponentStatus:
    breakers: dict[str, str] = {}
    if info.get("health_url"):
        healthy, version, breakers = await _http_health(session, info["health_url"])
    else:
        healthy, version = await _tcp_health(info.get("url") or "", info.get("port"))
    started = info.get("started_at")
    uptime = (datetime.now(UTC) - datetime.fromisoformat(started)).total_seconds() if started else None
    return ComponentStatus(
        name=name, pid=info.get("pid"), port=info.get("port"), url=info.get("url"),
        health="ok" if healthy else "down", version=version, restarts=info.get("restarts", 0),
        uptime_seconds=round(uptime, 1) if uptime is not None and healthy else None,
        circuit_breakers=breakers, database=database,
    )


async def _http_health(session: aiohttp.ClientSession, url: str) -> tuple[bool, str | None, dict[str, str]]:
    try:
        async with session.get(url) as reply:
            if reply.status != 200:
                return False, None, {}
            body = await reply.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False, None, {}
    if not isinstance(body, dict):
        return True, None, {}
    breakers = body.get("circuit_breakers")
    return True, body.get("version"), breakers if isinstance(breakers, dict) else {}


async def _tcp_health(url: str, port: int | None) -> tuple[bool, str | None]:
    """Up when the port accepts a connection; a NATS server also tells its version in its greeting."""
    host = urlsplit(url).hostname or "127.0.0.1"
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT)
    except (OSError, TimeoutError):
        return False, None
    version = None
    try:
        greeting = await asyncio.wait_for(reader.readline(), 0.5)
        if greeting.startswith(b"INFO "):
            version = json.loads(greeting[5:]).get("version")
    except (OSError, TimeoutError, ValueError):
        pass
    finally:
        writer.close()
    return True, version


def format_uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
