"""The operations console's way to chaos and `verify`: four routes on the supervisor's control
socket (control.py), each a thin layer over Chaos and experiment.verify.

    GET  /chaos    {"ok", "proxies": bool, "targets": [...], "faults": [{"target", "fault", "params", "heals_at"}]}
    POST /chaos    {"fault": "latency", "target": "payments", "ms": 300, "jitter_ms": 0, "seconds": 30}
                   {"fault": "error_rate" | "reset", "target": ..., "percent": 50}
                   {"fault": "partition", "target": ..., "mode": "refuse" | "drop"}
    POST /heal     {"target": "payments"} or {} for every target
    POST /verify   {"settle_seconds": 30} -> {"ok", "passed", "settle_seconds", "checks": [...]}

Bad input is a 400, a refusal of the running system (no proxies, proxy unreachable) a 409, both as
``{"ok": false, "error": ...}``. A fault with ``seconds`` is applied at once and its target healed
when the time is up (as a timed `chaos partition` does): the supervisor keeps that timer, so the
page's request does not wait for it. A target's last fault decides: a fault without ``seconds``
cancels its target's pending heal, a timed one replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from .chaos import Chaos, FaultRecord
from .components import PROXIED
from .errors import MicroshopError

if TYPE_CHECKING:
    from .system import System

log = logging.getLogger("microshop.supervisor")

# The network faults the page may inject; kill and pause stay on the command line.
FAULT_PARAMS: dict[str, tuple[str, ...]] = {
    "latency": ("ms", "jitter_ms"),
    "error_rate": ("percent",),
    "reset": ("percent",),
    "partition": ("mode",),
}
PARTITION_MODES = ("refuse", "drop")
MAX_LATENCY_MS = 60_000.0  # the chaos proxy's own bound on latency_ms and jitter_ms
MAX_FAULT_SECONDS = 24 * 3600.0
MAX_SETTLE_SECONDS = 600.0
# The chaos proxy's toxic types, as the fault names Chaos gives them.
_TOXIC_FAULTS = {"latency": "latency", "error": "error_rate", "reset_peer": "reset", "timeout": "partition"}


class BadRequest(ValueError):
    """The request itself is wrong: a 400, whatever state the system is in."""


@dataclass(frozen=True)
class FaultRequest:
    fault: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None


def parse_fault(body: object) -> FaultRequest:
    """Check a ``POST /chaos`` body: a known fault on a proxied target with its parameters in range."""
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object")
    fault = str(body.get("fault", "")).replace("-", "_")
    if fault not in FAULT_PARAMS:
        raise BadRequest(f"unknown fault {body.get('fault')!r}; known: {', '.join(FAULT_PARAMS)}")
    target = parse_target(body.get("target"), required=True)
    unknown = set(body) - {"fault", "target", "seconds", *FAULT_PARAMS[fault]}
    if unknown:
        takes = ", ".join(FAULT_PARAMS[fault])
        raise BadRequest(f"{fault} takes {takes} and seconds, not {', '.join(sorted(unknown))}")
    params: dict[str, Any]
    if fault == "latency":
        params = {"ms": _number(body, "ms", 0, MAX_LATENCY_MS),
                  "jitter_ms": _number(body, "jitter_ms", 0, MAX_LATENCY_MS, default=0.0)}
    elif fault == "partition":
        mode = body.get("mode", "refuse")
        if mode not in PARTITION_MODES:
            raise BadRequest(f"mode must be {' or '.join(PARTITION_MODES)}, not {mode!r}")
        params = {"mode": mode}
    else:
        params = {"percent": _number(body, "percent", 0, 100)}
    seconds = _number(body, "seconds", 0, MAX_FAULT_SECONDS, default=None, exclusive_minimum=True)
    return FaultRequest(fault, target, params, seconds)


def parse_target(value: object, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise BadRequest(f"a target is required; proxied: {', '.join(PROXIED)}")
        return None
    if value not in PROXIED:
        raise BadRequest(f"{value!r} has no chaos proxy; proxied: {', '.join(PROXIED)}")
    return str(value)


def parse_settle(body: object) -> float:
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object")
    return _number(body, "settle_seconds", 0, MAX_SETTLE_SECONDS, default=30.0)


def _number(body: Mapping, name: str, low: float, high: float, *, default: Any = ...,
            exclusive_minimum: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        if default is ...:
            raise BadRequest(f"{name} is required")
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{name} must be a number, not {value!r}")
    if value < low or value > high or (exclusive_minimum and value == low):
        above = "above" if exclusive_minimum else "from"
        raise BadRequest(f"{name} must be {above} {low:g} up to {high:g}, not {value:g}")
    return float(value)


def active_faults(proxies: Mapping[str, Mapping]) -> list[dict[str, Any]]:
    """The faults in force, one per proxy state or toxic, from the chaos proxy's ``GET /proxies``."""
    faults = []
    for target, proxy in sorted(proxies.items()):
        if not proxy.get("enabled", True):
            faults.append({"target": target, "fault": "partition", "params": {"mode": "refuse"}})
        for toxic in proxy.get("toxics", []):
            kind, attributes = toxic.get("type", ""), dict(toxic.get("attributes") or {})
            if kind == "timeout":
                params: dict[str, Any] = {"mode": "drop"}
            elif "rate" in attributes:
                params = {"percent": round(attributes["rate"] * 100, 2)}
            elif kind == "latency":
                params = {"ms": attributes.get("latency_ms"), "jitter_ms": attributes.get("jitter_ms", 0)}
            else:  # put there by hand through the proxy's API: shown as it is
                params = attributes
            faults.append({"target": target, "fault": _TOXIC_FAULTS.get(kind, kind), "params": params})
    return faults


class ChaosControl:
    """The routes above, and the timers of timed faults (cancelled when the supervisor stops)."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.chaos = Chaos(system.paths, system.state)
        self._heals: dict[str, tuple[asyncio.Task, datetime]] = {}  # target -> its pending heal

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/chaos", self._faults)
        app.router.add_post("/chaos", self._inject)
        app.router.add_post("/heal", self._heal)
        app.router.add_post("/verify", self._verify)

    async def stop(self) -> None:
        for task, _ in list(self._heals.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._heals.clear()

    async def _faults(self, _request: web.Request) -> web.Response:
        if not self.system.config.chaos_proxies:
            return _ok(proxies=False, targets=[], faults=[])
        try:
            faults = active_faults(await self.chaos.proxies())
        except MicroshopError as exc:
            return error_answer(409, str(exc))
        for fault in faults:
            pending = self._heals.get(fault["target"])
            fault["heals_at"] = _iso(pending[1]) if pending else None
        return _ok(proxies=True, targets=list(PROXIED), faults=faults)

    async def _inject(self, request: web.Request) -> web.Response:
        try:
            wanted = parse_fault(await read_body(request))
        except BadRequest as exc:
            return error_answer(400, str(exc))
        try:
            record = await self._apply(wanted)
        except MicroshopError as exc:
            return error_answer(409, str(exc))
        self._cancel_heal(wanted.target)
        heals_at = None
        if wanted.seconds is not None:
            heals_at = datetime.now(UTC) + timedelta(seconds=wanted.seconds)
            task = asyncio.create_task(self._heal_later(wanted.target, wanted.seconds), name=f"heal-{wanted.target}")
            self._heals[wanted.target] = (task, heals_at)
        return _ok(applied=record.describe(), target=wanted.target, heals_at=_iso(heals_at))

    async def _apply(self, wanted: FaultRequest) -> FaultRecord:
        target, params = wanted.target, wanted.params
        match wanted.fault:
            case "latency":
                return await self.chaos.latency(target, params["ms"], params["jitter_ms"])
            case "error_rate":
                return await self.chaos.error_rate(target, params["percent"])
            case "reset":
                return await self.chaos.reset(target, params["percent"])
            case "partition":
                return await self.chaos.partition(target, None, mode=params["mode"])
        raise AssertionError(wanted.fault)

    async def _heal(self, request: web.Request) -> web.Response:
        try:
            body = await read_body(request)
            if not isinstance(body, Mapping):
                raise BadRequest("the body must be a JSON object")
            target = parse_target(body.get("target"), required=False)
        except BadRequest as exc:
            return error_answer(400, str(exc))
        try:
            record = await self.chaos.heal(target)
        except MicroshopError as exc:
            return error_answer(409, str(exc))
        for name in [target] if target else list(self._heals):
            self._cancel_heal(name)
        return _ok(applied=record.describe(), target=target)

    async def _verify(self, request: web.Request) -> web.Response:
        # Imported here: experiment imports system, which imports this module.
        from .experiment import Target, verify

        try:
            settle_seconds = parse_settle(await read_body(request))
        except BadRequest as exc:
            return error_answer(400, str(exc))
        try:
            checks, waited = await verify(Target.of(self.system), settle_seconds=settle_seconds)
        except (RuntimeError, aiohttp.ClientError, TimeoutError, MicroshopError) as exc:
            return error_answer(409, f"could not read the services' state: {exc}")
        return _ok(passed=all(check.ok for check in checks), settle_seconds=round(waited, 1),
                   checks=[asdict(check) for check in checks])

    async def _heal_later(self, target: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._heals.pop(target, None)  # done: stopping must not cancel the heal under way
        try:
            await self.chaos.heal(target)
        except MicroshopError as exc:
            log.warning("the timed heal of %s failed: %s", target, exc)

    def _cancel_heal(self, target: str) -> None:
        pending = self._heals.pop(target, None)
        if pending:
            pending[0].cancel()


async def read_body(request: web.Request) -> object:
    try:
        return await request.json()
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None


def _ok(**fields: Any) -> web.Response:
    return web.json_response({"ok": True, **fields})


def error_answer(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None
