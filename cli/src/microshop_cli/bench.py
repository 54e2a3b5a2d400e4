"""`microshop bench`: drive N checkouts at concurrency C through the gateway and report what the
system did: throughput, latency to CONFIRMED, errors, and each process's memory and CPU.

Against a running system (`microshop up` in the same data dir) or, when none runs, a fresh one
started with the launcher's own code in a temporary directory (then `up`'s time to ready is
reported too). The load generator runs on the same machine and its CPU counts against the system's:
the figures are for "everything on one box", as the docs say.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from microshop_chassis.middleware import QUIET_PATHS

from .components import admin_credentials
from .shop_client import login, new_customer, stock_up
from .state import DataDir, read_state, running_supervisor
from .system import System, SystemConfig

APPROVED_CARD = {"card_number": "4242424242424242", "expiry_month": 12, "expiry_year": 2035, "cvc": "123"}
FINAL = {"CONFIRMED", "REJECTED", "CANCELLED"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class BenchResult:
    checkouts: int
    concurrency: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds to CONFIRMED, confirmed only
    outcomes: Counter = field(default_factory=Counter)  # CONFIRMED, REJECTED, HTTP 503, ...
    processes: dict[str, dict] = field(default_factory=dict)  # name -> rss_mb, cpu_s
    ready_seconds: float | None = None
    read_model_lag_seconds: float | None = None
    trace_searchable_seconds: float | None = None  # None: no telemetry component, or not within the timeout

    @property
    def confirmed(self) -> int:
        return self.outcomes["CONFIRMED"]

    @property
    def throughput(self) -> float:
        return self.confirmed / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float | None:
        return percentile(self.latencies, p)

    def as_dict(self) -> dict:
        ms = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
        return {
            "checkouts": self.checkouts, "concurrency": self.concurrency, "seconds": round(self.seconds, 2),
            "confirmed": self.confirmed, "throughput_per_s": round(self.throughput, 1),
            "latency_ms": {"p50": ms(self.percentile(50)), "p95": ms(self.percentile(95)),
                           "p99": ms(self.percentile(99)), "max": ms(max(self.latencies, default=None))},
            "outcomes": dict(self.outcomes), "processes": self.processes,
            "up_ready_seconds": self.ready_seconds, "read_model_lag_seconds": self.read_model_lag_seconds,
            "trace_searchable_seconds": self.trace_searchable_seconds,
        }


def percentile(values: list[float], p: float) -> float | None:
    """The ``p``th percentile (1 to 100) of ``values``; None when there are none."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def process_usage(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds so far) of a live process, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
    return rss_kb / 1024, cpu


def served_requests(metrics_text: str, route: str | None = None) -> float:
    """Requests a process served, from its /metrics text: to ``route``, or to any route but the
    operations ones (probes, status checks, scrapes)."""
    def counted(line: str) -> bool:
        if route is not None:
            return f'route="{route}"' in line
        # Not the load: the supervisor's probes, status checks and scrapes (the chassis's quiet paths).
        return not any(f'route="{operations}"' in line for operations in QUIET_PATHS)

    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
               if line.startswith("http_server_requests_total{") and counted(line))


class Bench:
    def __init__(self, gateway: str, admin_email: str, admin_password: str, pids: dict[str, int],
                 reports_timeout: float = 60.0, urls: dict[str, str] | None = None,
                 telemetry_url: str | None = None) -> None:
        """``urls``: the services' (and replicas') own addresses, for the requests each served;
        ``telemetry_url``: the telemetry component, to time how soon a trace can be found."""
        self.gateway = gateway.rstrip("/")
        self.admin_email = admin_email
        self.admin_password = admin_password
        self.pids = pids
        self.urls = urls or {}
        self.reports_timeout = reports_timeout
        self.telemetry_url = telemetry_url.rstrip("/") if telemetry_url else None

    async def run(self, checkouts: int, concurrency: int) -> BenchResult:
        connector = aiohttp.TCPConnector(limit=concurrency * 2, limit_per_host=concurrency * 2)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
            admin = await login(http, f"{self.gateway}/api/users/login", self.admin_email, self.admin_password)
            skus = await self._stock_up(http, admin, checkouts)
            tokens = await asyncio.gather(*(new_customer(http, self.gateway, "bench") for _ in range(concurrency)))
            sales_before = await self._confirmed_in_report(http, admin)
            cpu_before = {name: process_usage(pid)[1] for name, pid in self.pids.items()}
            served_before = await self._served(http, admin)

            result = BenchResult(checkouts, concurrency, 0.0)
            queue: asyncio.Queue[int] = asyncio.Queue()
            for n in range(checkouts):
                queue.put_nowait(n)
            start = time.perf_counter()
            await asyncio.gather(*(self._worker(http, token, skus, queue, result) for token in tokens))
            result.seconds = time.perf_counter() - start

            served = await self._served(http, admin)
            for name, pid in self.pids.items():
                rss, cpu = process_usage(pid)
                result.processes[name] = {"rss_mb": round(rss, 1), "cpu_s": round(cpu - cpu_before[name], 2)}
                if name in served and name in served_before:
                    result.processes[name]["requests"] = int(served[name] - served_before[name])
            result.read_model_lag_seconds = await self._read_model_lag(
                http, admin, sales_before + result.confirmed
            )
            if self.telemetry_url:
                result.trace_searchable_seconds = await self._trace_searchable(http, tokens[0], skus[0])
            return result

    async def _worker(self, http, token: str, skus: list[str], queue: asyncio.Queue, result: BenchResult) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        while not queue.empty():
            n = queue.get_nowait()
            body = {"items": [{"sku": skus[n % len(skus)], "quantity": 1}], "payment": APPROVED_CARD}
            began = time.perf_counter()
            try:
                async with http.post(f"{self.gateway}/api/orders", json=body,
                                     headers={**headers, "Idempotency-Key": str(uuid.uuid4())}) as response:
                    answer = await response.json(content_type=None)
                    status = response.status
                if status in (201, 202):
                    while answer["status"] not in FINAL:  # 202: finishing in the background
                        await asyncio.sleep(0.05)
                        async with http.get(f"{self.gateway}/api/orders/{answer['id']}", headers=headers) as r:
                            answer = await r.json()
                    outcome = answer["status"]
                else:
                    outcome = f"HTTP {status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = type(exc).__name__
            result.outcomes[outcome] += 1
            if outcome == "CONFIRMED":
                result.latencies.append(time.perf_counter() - began)

    async def _trace_searchable(self, http, token: str, sku: str) -> float | None:
        """How long after one more checkout's answer (the system quiet) the telemetry component
        finds its trace by the order id, as the console's search does."""
        body = {"items": [{"sku": sku, "quantity": 1}], "payment": APPROVED_CARD}
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
        async with http.post(f"{self.gateway}/api/orders", json=body, headers=headers) as response:
            if response.status not in (201, 202):
                return None
            order_id = (await response.json())["id"]
        answered = time.perf_counter()
        while time.perf_counter() - answered < self.reports_timeout:
            async with http.get(f"{self.telemetry_url}/api/traces", params={"order_id": order_id}) as reply:
                if reply.status == 200 and await reply.json():
                    return time.perf_counter() - answered
            await asyncio.sleep(0.05)
        return None

    async def _served(self, http, admin: str) -> dict[str, float]:
        """Requests each service process has served so far (but its probes and scrapes), from its
        /metrics: how the load spread over a service's replicas."""
        async def one(url: str) -> float | None:
            try:
                async with http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {admin}"}) as reply:
                    text = await reply.text() if reply.status == 200 else ""
            except (aiohttp.ClientError, TimeoutError):
                return None
            return served_requests(text) if text else None

        counts = await asyncio.gather(*(one(url) for url in self.urls.values()))
        return {name: count for name, count in zip(self.urls, counts, strict=True) if count is not None}

    async def _stock_up(self, http, admin: str, checkouts: int) -> list[str]:
        """Enough stock that no checkout is refused for lack of it: the bench measures the happy path."""
        skus = await stock_up(http, self.gateway, admin, checkouts)
        if not skus:
            raise RuntimeError("no demo catalog in the system: start it without --no-seed")
        return skus

    async def _confirmed_in_report(self, http, admin: str) -> int:
        async with http.get(f"{self.gateway}/api/reports/sales", headers={"Authorization": f"Bearer {admin}"}) as r:
            return (await r.json())["orders_confirmed"] if r.status == 200 else 0

    async def _read_model_lag(self, http, admin: str, expected: int) -> float | None:
        """How long after the last checkout the event-built sales report counts every order."""
        start = time.perf_counter()
        while time.perf_counter() - start < self.reports_timeout:
            if await self._confirmed_in_report(http, admin) >= expected:
                return time.perf_counter() - start
            await asyncio.sleep(0.05)
        return None


@dataclass
class BenchedSystem:
    """The system a bench drives: its addresses, the admin's login and its processes."""

    gateway: str
    admin_email: str
    admin_password: str
    pids: dict[str, int]  # every process
    urls: dict[str, str]  # the services' (and replicas') own addresses
    telemetry_url: str | None = None
    storefront_url: str | None = None
    ready_seconds: float | None = None  # only when the bench started it: `up`'s time to ready


@asynccontextmanager
async def running_or_fresh(data_dir: Path) -> AsyncIterator[BenchedSystem]:
    """The system running in ``data_dir``, or else a fresh one in a temporary directory, stopped
    and removed on the way out."""
    paths = DataDir(data_dir)
    state = read_state(paths) if running_supervisor(paths) else None
    if state:
        processes = state["processes"]
        yield BenchedSystem(state["gateway_url"], *admin_credentials(),
                     pids={name: p["pid"] for name, p in processes.items()},
                     urls={name: p["url"] for name, p in processes.items() if p.get("service")},
                     telemetry_url=processes.get("telemetry", {}).get("url"),
                     storefront_url=processes.get("storefront", {}).get("url"))
        return
    with tempfile.TemporaryDirectory(prefix="microshop-bench-") as tmp:
        started = time.perf_counter()
        async with System(SystemConfig.with_free_ports(Path(tmp))) as system:
            ready = time.perf_counter() - started
            names = system.names
            yield BenchedSystem(system.url("gateway"), system.admin_email, system.admin_password,
                         pids={name: system.pid(name) for name in names},
                         urls={name: system.url(name) for name in names if system.component(name).service},
                         telemetry_url=system.url("telemetry") if "telemetry" in names else None,
                         storefront_url=system.url("storefront") if "storefront" in names else None,
                         ready_seconds=round(system.ready_seconds or ready, 2))


async def bench(data_dir: Path, checkouts: int, concurrency: int) -> BenchResult:
    async with running_or_fresh(data_dir) as target:
        runner = Bench(target.gateway, target.admin_email, target.admin_password, target.pids, urls=target.urls,
                       telemetry_url=target.telemetry_url)
        result = await runner.run(checkouts, concurrency)
        result.ready_seconds = target.ready_seconds
        return result
