"""`microshop chaos`: faults against the running system, each reversible and logged.

Process faults act on the supervisor's processes (pids from the run state): SIGKILL (the supervisor
restarts the component, after ``down_for`` if given) and SIGSTOP/SIGCONT. Network faults go to the
fault-injection proxies that `up --chaos-proxies` puts in front of every service (tools/chaos-proxy):
this kernel has no netem, so latency, injected errors, resets and partitions happen in userspace on
the real connections between services. Every fault is written as one JSON line to logs/chaos.log.

    chaos = Chaos(paths, state)            # state: a function returning the supervisor's run state
    await chaos.latency("payments", 300, seconds=5)
    await chaos.monkey(duration=60, seed=7)  # the same seed gives the same faults in the same order
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import aiohttp

from .components import ALL_SERVICES, CHAOS_PROXY, PROXIED, SERVICES
from .errors import MicroshopError
from .state import DataDir, hold

NETWORK_FAULTS = ("latency", "error-rate", "reset", "partition")
PROCESS_FAULTS = ("kill", "pause", "broker-restart")
FAULTS = (*PROCESS_FAULTS, *NETWORK_FAULTS)
KILLABLE = ALL_SERVICES


@dataclass
class FaultRecord:
    fault: str
    target: str
    params: dict = field(default_factory=dict)
    seconds: float | None = None  # how long it lasted; None: left on until `chaos heal`
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))

    def describe(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in self.params.items())
        lasting = f" for {self.seconds:g} s" if self.seconds is not None else ""
        return f"{self.fault} {self.target} {params}".rstrip() + lasting


class Chaos:
    def __init__(self, paths: DataDir, state: Callable[[], dict | None], *, request_timeout: float = 5.0) -> None:
        self.paths = paths
        self._state = state
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)

    # --- process faults -------------------------------------------------------------------------

    async def kill(self, name: str, *, down_for: float = 0.0) -> FaultRecord:
        """SIGKILL, as a crash; the supervisor restarts it (after ``down_for`` seconds if given)."""
        pid = self.pid(name)
        if down_for > 0:
            hold(self.paths, name, down_for)
        params: dict = {"pid": pid, "down_for": down_for} if down_for else {"pid": pid}
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # died a moment ago (an earlier fault); not restarted yet
            params["already_down"] = True
        return self._log(FaultRecord("kill", name, params))

    async def pause(self, name: str, seconds: float) -> FaultRecord:
        """SIGSTOP for ``seconds``, then SIGCONT (also when interrupted): a hung process, not a dead one."""
        pid = self.pid(name)
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:  # died a moment ago (an earlier fault); not restarted yet
            return self._log(FaultRecord("pause", name, {"pid": pid, "already_down": True}, 0.0))
        record = self._log(FaultRecord("pause", name, {"pid": pid}, seconds))
        try:
            await asyncio.sleep(seconds)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            self._log(FaultRecord("resume", name, {"pid": pid}))
        return record

    async def broker_restart(self, *, down_for: float = 0.0) -> FaultRecord:
        """Kill NATS (SIGKILL: no clean shutdown); the supervisor starts it again on the same store."""
        record = await self.kill("nats", down_for=down_for)
        record.fault = "broker-restart"
        return record

    # --- network faults (through the chaos proxies) -------------------------------------------------

    async def latency(self, name: str, ms: float, jitter_ms: float = 0.0, *,
                      seconds: float | None = None) -> FaultRecord:
        return await self._toxic("latency", name, "latency", {"latency_ms": ms, "jitter_ms": jitter_ms}, seconds)

    async def error_rate(self, name: str, percent: float, *, seconds: float | None = None) -> FaultRecord:
        """That share of requests to ``name`` answered 503 by the proxy; the service never sees them."""
        return await self._toxic("error-rate", name, "error", {"rate": percent / 100}, seconds)

    async def reset(self, name: str, percent: float, *, seconds: float | None = None) -> FaultRecord:
        """That share of requests reach ``name`` but their connection is reset before the answer:
        the caller cannot know whether the work was done (the unknown outcome sagas must settle)."""
        return await self._toxic("reset", name, "reset_peer", {"rate": percent / 100, "after_request": True}, seconds)

    async def partition(self, name: str, seconds: float | None, *, mode: str = "refuse") -> FaultRecord:
        """Cut ``name`` off from its callers: ``refuse`` closes the proxy's port (connections refused,
        open ones reset); ``drop`` keeps connections open but lets nothing through (callers time out)."""
        if mode not in ("refuse", "drop"):
            raise MicroshopError(f"partition mode must be refuse or drop, not {mode!r}")
        self._check_proxied(name)
        record = self._log(FaultRecord("partition", name, {"mode": mode}, seconds))
        if mode == "refuse":
            await self._proxy_call("POST", f"/proxies/{name}", {"enabled": False})
        else:
            await self._replace_toxic(name, "chaos-partition", "timeout", {})
        if seconds is None:
            return record
        try:
            await asyncio.sleep(seconds)
        finally:
            await self.heal(name)
        return record

    async def heal(self, name: str | None = None) -> FaultRecord:
        """Undo every network fault, on one proxied component or on all of them."""
        if name is None:
            await self._proxy_call("POST", "/reset")
        else:
            self._check_proxied(name)
            await self._proxy_call("POST", f"/proxies/{name}", {"enabled": True})
            proxy = await self._proxy_call("GET", f"/proxies/{name}")
            for toxic in proxy.get("toxics", []):
                await self._proxy_call("DELETE", f"/proxies/{name}/toxics/{toxic['name']}", ok=(204, 404))
        return self._log(FaultRecord("heal", name or "all"))

    async def proxies(self) -> dict:
        return (await self._proxy_call("GET", "/proxies"))["proxies"]

    # --- the monkey -------------------------------------------------------------------------------

    async def monkey(
        self, *, duration: float, seed: int, faults: Sequence[str] = FAULTS, max_fault_seconds: float = 4.0,
        min_gap_seconds: float = 0.2, max_gap_seconds: float = 2.0,
        on_fault: Callable[[FaultRecord], None] | None = None,
    ) -> list[FaultRecord]:
        """Random faults, one at a time, for ``duration`` seconds. The seed fixes which faults, on
        which targets, with which parameters, in which order; the system's answers vary, the plan not.
        Kinds are dealt from a shuffled deck - every kind once per round - so even a short run
        covers them all instead of leaving one out by chance."""
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise MicroshopError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
        if not self.has_proxies:
            faults = [fault for fault in faults if fault not in NETWORK_FAULTS]
            if not faults:
                raise MicroshopError("network faults need `microshop up --chaos-proxies`")
        rng = random.Random(seed)
        applied: list[FaultRecord] = []
        deck: list[str] = []
        end = time.monotonic() + duration
        try:
            while time.monotonic() < end:
                if not deck:
                    deck = rng.sample(list(faults), len(faults))
                record = await self._random_fault(rng, deck.pop(), max_fault_seconds)
                applied.append(record)
                if on_fault:
                    on_fault(record)
                await asyncio.sleep(rng.uniform(min_gap_seconds, max_gap_seconds))
        finally:
            if self.has_proxies:
                with contextlib.suppress(MicroshopError):
                    await self.heal()
        return applied

    async def _random_fault(self, rng: random.Random, fault: str, max_seconds: float) -> FaultRecord:
        seconds = round(rng.uniform(0.5, max_seconds), 1)
        match fault:
            case "kill":
                return await self.kill(self._replica(rng, rng.choice(KILLABLE)))
            case "pause":
                return await self.pause(self._replica(rng, rng.choice(SERVICES)), seconds)
            case "broker-restart":
                return await self.broker_restart()
            case "latency":
                return await self.latency(rng.choice(PROXIED), rng.choice((50, 200, 500)), 50, seconds=seconds)
            case "error-rate":
                return await self.error_rate(rng.choice(PROXIED), rng.choice((10, 30, 50)), seconds=seconds)
            case "reset":
                return await self.reset(rng.choice(PROXIED), rng.choice((10, 30)), seconds=seconds)
            case "partition":
                return await self.partition(rng.choice(PROXIED), seconds, mode=rng.choice(("refuse", "drop")))
        raise AssertionError(fault)

    # --- helpers ----------------------------------------------------------------------------------

    def _replica(self, rng: random.Random, service: str) -> str:
        """One of the service's replicas (a service run once draws no number: a seed's plan stays)."""
        replicas = sorted(name for name, info in self._processes().items() if info.get("service") == service)
        return rng.choice(replicas) if len(replicas) > 1 else service

    def pid(self, name: str) -> int:
        processes = self._processes()
        if name not in processes:
            raise MicroshopError(f"no running component {name!r}; known: {', '.join(processes)}")
        return processes[name]["pid"]

    @property
    def has_proxies(self) -> bool:
        return CHAOS_PROXY in self._processes()

    def _processes(self) -> dict:
        state = self._state()
        if not state:
            raise MicroshopError(f"microshop is not running ({self.paths.root})")
        return state.get("processes", {})

    def _check_proxied(self, name: str) -> None:
        if name not in PROXIED:
            raise MicroshopError(f"{name!r} has no chaos proxy; proxied: {', '.join(PROXIED)}")

    async def _toxic(self, fault: str, name: str, kind: str, attributes: dict, seconds: float | None) -> FaultRecord:
        self._check_proxied(name)
        toxic = f"chaos-{fault}"
        record = self._log(FaultRecord(fault, name, attributes, seconds))
        await self._replace_toxic(name, toxic, kind, attributes)
        if seconds is None:
            return record
        try:
            await asyncio.sleep(seconds)
        finally:
            await self._proxy_call("DELETE", f"/proxies/{name}/toxics/{toxic}", ok=(204, 404))
            self._log(FaultRecord(f"{fault}-off", name))
        return record

    async def _replace_toxic(self, name: str, toxic: str, kind: str, attributes: dict) -> None:
        await self._proxy_call("DELETE", f"/proxies/{name}/toxics/{toxic}", ok=(204, 404))
        await self._proxy_call("POST", f"/proxies/{name}/toxics", {"name": toxic, "type": kind,
                                                                   "attributes": attributes})

    async def _proxy_call(self, method: str, path: str, body: dict | None = None,
                          ok: tuple[int, ...] = (200, 201, 204)) -> dict:
        processes = self._processes()
        if CHAOS_PROXY not in processes:
            raise MicroshopError("no chaos proxies: start the system with `microshop up --chaos-proxies`")
        url = processes[CHAOS_PROXY]["url"] + path
        try:
            async with aiohttp.ClientSession(timeout=self._timeout) as http, \
                    http.request(method, url, json=body) as reply:
                text = await reply.text()
                if reply.status not in ok:
                    raise MicroshopError(f"chaos proxy: {method} {path} answered {reply.status}: {text[:300]}")
                return json.loads(text) if text else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise MicroshopError(f"chaos proxy at {url} unreachable: {exc!r}") from exc

    def _log(self, record: FaultRecord) -> FaultRecord:
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        with self.paths.log_file("chaos").open("a") as file:
            file.write(json.dumps(asdict(record)) + "\n")
        return record
