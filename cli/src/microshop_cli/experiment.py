"""A chaos experiment: steady checkout load, seeded random faults, then `verify` - the run behind
`microshop chaos run` and docs/chaos-report.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from . import shop_client
from .catalog import LOW_STOCK_SKU
from .chaos import FAULTS, KILLABLE, Chaos, FaultRecord
from .load import CheckoutLoad, LoadResult
from .shop_client import login
from .state import DataDir, read_state, running_supervisor
from .system import System, SystemConfig
from .verify import Check, Reader, check_all, service_urls, settle


@dataclass
class Target:
    """A running system as the experiment sees it: where it keeps its state and how to log in."""

    paths: DataDir
    state: Callable[[], dict | None]
    admin_email: str
    admin_password: str

    @property
    def gateway_url(self) -> str:
        return self.state()["gateway_url"]

    def reader(self) -> Reader:
        return Reader(service_urls(self.state()["processes"]), self.admin_email, self.admin_password)

    @classmethod
    def of(cls, system: System) -> Target:
        return cls(system.paths, system.state, system.admin_email, system.admin_password)

    @classmethod
    def running(cls, paths: DataDir, email: str, password: str) -> Target | None:
        if running_supervisor(paths) is None:
            return None
        return cls(paths, lambda: read_state(paths), email, password)


@dataclass
class ExperimentReport:
    seed: int
    faults: list[FaultRecord]
    load: LoadResult
    checks: list[Check]
    settle_seconds: float

    @property
    def violations(self) -> int:
        return sum(len(c.problems) or (0 if c.ok else 1) for c in self.checks)

    def as_dict(self) -> dict:
        return {
            "seed": self.seed, "faults": [f.describe() for f in self.faults], "load": self.load.summary(),
            "settle_seconds": round(self.settle_seconds, 1), "violations": self.violations,
            "checks": [{"number": c.number, "name": c.name, "ok": c.ok, "figures": c.figures, "problems": c.problems}
                       for c in self.checks],
        }


async def verify(target: Target, *, accepted_order_ids: Sequence[str] = (), settle_seconds: float = 60.0
                 ) -> tuple[list[Check], float]:
    snapshot, waited = await settle(target.reader(), settle_seconds, accepted_order_ids)
    return check_all(snapshot, accepted_order_ids), waited


async def run_experiment(
    target: Target, *, duration: float, seed: int, rate: float = 10.0, faults: Sequence[str] = FAULTS,
    kill_every_service: bool = True, settle_seconds: float = 60.0,
    on_fault: Callable[[FaultRecord], None] | None = None,
) -> ExperimentReport:
    """Load for ``duration`` seconds with the monkey running alongside (and, unless told otherwise,
    every service killed once at evenly spaced moments, overlapping whatever the monkey does);
    then heal, let the system settle and check every invariant."""
    # Enough stock that only the limited product sells out: faults, not an empty shelf, decide.
    await stock_up(target, int(rate * duration * 2) + 100)
    load = CheckoutLoad(target.gateway_url, rate=rate, seed=seed)
    await load.prepare()
    stop = asyncio.Event()
    loading = asyncio.create_task(load.run(stop=stop))
    chaos = Chaos(target.paths, target.state)
    killed: list[FaultRecord] = []
    killing = asyncio.create_task(_kill_each(chaos, duration, killed, on_fault)) if kill_every_service else None
    try:
        applied = await chaos.monkey(duration=duration, seed=seed, faults=faults, on_fault=on_fault)
    finally:
        if killing is not None:
            await killing
        stop.set()
        result = await loading
    applied = sorted(applied + killed, key=lambda record: record.at)
    checks, waited = await verify(target, accepted_order_ids=result.accepted_order_ids, settle_seconds=settle_seconds)
    return ExperimentReport(seed, applied, result, checks, waited)


async def stock_up(target: Target, units: int) -> None:
    """Add ``units`` to every demo product but the limited one (it stays the sold-out case)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        gateway = target.gateway_url
        token = await login(http, f"{gateway}/api/users/login", target.admin_email, target.admin_password)
        await shop_client.stock_up(http, gateway, token, units, leave_out={LOW_STOCK_SKU})


async def _kill_each(chaos: Chaos, duration: float, killed: list[FaultRecord],
                     on_fault: Callable[[FaultRecord], None] | None) -> None:
    gap = duration / (len(KILLABLE) + 1)
    for name in KILLABLE:
        await asyncio.sleep(gap)
        record = await chaos.kill(name)
        killed.append(record)
        if on_fault:
            on_fault(record)


@contextlib.asynccontextmanager
async def fresh_system(*, chaos_seed: int = 0) -> AsyncIterator[Target]:
    """A whole system with chaos proxies, in a temporary directory on free ports."""
    with tempfile.TemporaryDirectory(prefix="microshop-chaos-") as tmp:
        config = SystemConfig.with_free_ports(Path(tmp), chaos_proxies=True, chaos_seed=chaos_seed)
        async with System(config) as system:
            yield Target.of(system)
