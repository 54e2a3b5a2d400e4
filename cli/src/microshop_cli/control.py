"""How ``microshop scale`` and ``microshop deploy`` reach the running supervisor: a Unix socket
in the data directory's ``run/`` folder (0700, so only its owner may connect), answering JSON.

    POST /scale   {"service": "payments", "replicas": 3}
    POST /deploy  {"service": "orders", "release": "1.1", "env": {...}, "ready_timeout": 60}
    GET /chaos, POST /chaos, POST /heal, POST /verify: the console's chaos page (chaos_control.py)

A socket and not a signal: the command waits for the rollout and gets its outcome back. Unix
sockets take paths of up to 107 bytes; a data directory deeper than that gets no socket (logged).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from .chaos_control import BadRequest, ChaosControl, error_answer, read_body
from .errors import MicroshopError
from .state import DataDir

if TYPE_CHECKING:
    from .system import System

MAX_SOCKET_PATH = 107


def socket_path(paths: DataDir) -> Path:
    return paths.control_socket


class ControlServer:
    def __init__(self, system: System) -> None:
        self.system = system
        self.path = socket_path(system.paths)
        self._runner: web.AppRunner | None = None
        self.chaos = ChaosControl(system)

    async def start(self) -> bool:
        if len(str(self.path).encode()) > MAX_SOCKET_PATH:
            return False
        app = web.Application()
        app.router.add_post("/scale", self._scale)
        app.router.add_post("/deploy", self._deploy)
        self.chaos.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self.path.unlink(missing_ok=True)
        await web.UnixSite(self._runner, str(self.path)).start()
        self.path.chmod(0o600)
        return True

    async def stop(self) -> None:
        await self.chaos.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.path.unlink(missing_ok=True)

    async def _scale(self, request: web.Request) -> web.Response:
        try:
            body = _object(await read_body(request))
            service = _required(body, "service", str, "a string")
            replicas = _required(body, "replicas", int, "a whole number")
        except BadRequest as exc:
            return error_answer(400, str(exc))
        return await _answer(self.system.scale(service, replicas))

    async def _deploy(self, request: web.Request) -> web.Response:
        try:
            body = _object(await read_body(request))
            service = _required(body, "service", str, "a string")
            release = _optional(body, "release", str, "a string")
            env = _optional(body, "env", dict, "an object")
            if env is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
                raise BadRequest("env must map names to strings")
            ready_timeout = _optional(body, "ready_timeout", (int, float), "a number")
            if ready_timeout is not None and not ready_timeout > 0:
                raise BadRequest("ready_timeout must be a number of seconds above 0")
        except BadRequest as exc:
            return error_answer(400, str(exc))
        return await _answer(self.system.deploy(service, release, env=env or None, ready_timeout=ready_timeout))


def _object(body: object) -> dict:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _required(body: dict, name: str, kind: type | tuple[type, ...], what: str):
    if name not in body:
        raise BadRequest(f"{name} is missing")
    return _optional(body, name, kind, what)


def _optional(body: dict, name: str, kind: type | tuple[type, ...], what: str):
    value = body.get(name)
    # A bool is an int to Python; here it is never a count or a number of seconds.
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise BadRequest(f"{name} must be {what}")
    return value


async def _answer(change) -> web.Response:
    try:
        return web.json_response({"ok": True, **await change})
    except MicroshopError as exc:
        return web.json_response({"ok": False, "error": str(exc)}, status=409)


def request(paths: DataDir, action: str, body: dict, timeout: float = 900.0) -> dict:
    """Send one change to the supervisor and wait for its outcome (``{"ok": ..., ...}``)."""
    path = socket_path(paths)
    if not path.exists():
        raise MicroshopError(f"the supervisor of {paths.root} has no control socket ({path})")

    async def send() -> dict:
        connector = aiohttp.UnixConnector(path=str(path))
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.post(f"http://supervisor/{action}", json=body) as reply:
                return await reply.json()

    return asyncio.run(send())
