"""`microshop bench`: drive N checkouts at concurrency C through the gateway and report what the
system did: throughput, latency to CONFIRMED, errors, and each process's memory and CPU.

Against a running system (`microshop up` in the same data dir) or, when none runs, a fresh one
started with the launcher's own code in a temporary directory (then `up`'s time to ready is
reported too). The load generator runs on the same machine and its CPU counts against the system's:
the figures are for "everything on one box", as the docs say.

A closed loop of C workers by default; ``--rate`` an open loop with latency from each action's
intended start; ``--mix`` catalog reads among the checkouts; ``--sweep`` a closed loop per
concurrency level; ``--floor`` a bare hop and commit to read the figures against (bench_load.py,
bench_floor.py). CPU is per process with its descendants (bench_proc.py); ``--compare`` runs it
all per mode (bench_compare.py).
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from microshop_chassis.middleware import QUIET_PATHS

from .bench_floor import Floor, measure_floor
from .bench_load import BROWSE, CHECKOUT, Sample, closed_loop, open_loop, plan_actions
from .bench_proc import FORK_SERVER, ProcessTrees, rss_mb
from .bench_stats import latency_ms, percentile
from .components import admin_credentials
from .shop_client import APPROVED_CARD, login, new_customer, stock_up
from .state import DataDir, read_state, running_supervisor
from .system import System, SystemConfig

FINAL = {"CONFIRMED", "REJECTED", "CANCELLED"}


@dataclass
class BenchResult:
    checkouts: int
    concurrency: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds to CONFIRMED, confirmed only
    outcomes: Counter = field(default_factory=Counter)  # CONFIRMED, REJECTED, HTTP 503, ...
    processes: dict[str, dict] = field(default_factory=dict)  # name -> rss_mb, cpu_s, cpu_ms_per_checkout
    ready_seconds: float | None = None
    read_model_lag_seconds: float | None = None
    # After the last checkout, until the work it left behind (its mail, its report figures) was
    # done: the CPU counted per checkout includes it. None: not within the timeout.
    drained_seconds: float | None = None
    trace_searchable_seconds: float | None = None  # None: no telemetry component, or not within the timeout
    rate: float | None = None  # open loop: user actions started per second; None: closed loop
    browse_percent: float = 0.0
    browse_latencies: list[float] = field(default_factory=list)  # seconds, the 200 answers only
    browse_outcomes: Counter = field(default_factory=Counter)  # OK, HTTP 404, ...
    late: int = 0  # open loop: actions that started more than LATE_AFTER after their due time
    cpu_s: float = 0.0  # every process's (and its descendants') CPU during the run and its drain, summed
    sweep: list[dict] = field(default_factory=list)  # a closed loop per concurrency level
    floor: Floor | None = None

    @property
    def confirmed(self) -> int:
        return self.outcomes["CONFIRMED"]

    @property
    def throughput(self) -> float:
        return self.confirmed / self.seconds if self.seconds else 0.0

    @property
    def actions(self) -> int:
        return sum(self.outcomes.values()) + sum(self.browse_outcomes.values())

    @property
    def cpu_ms_per_checkout(self) -> float | None:
        return round(self.cpu_s * 1000 / self.confirmed, 2) if self.confirmed else None

    def percentile(self, p: float) -> float | None:
        return percentile(self.latencies, p)

    def kinds(self) -> dict[str, dict]:
        """Per kind of user action: how many, latency and the answers that were not a success."""
        def kind(latencies: list[float], outcomes: Counter, success: str) -> dict:
            return {"count": sum(outcomes.values()), "latency_ms": latency_ms(latencies, (50, 95, 99)),
                    "errors": {k: v for k, v in outcomes.items() if k != success}}

        return {CHECKOUT: kind(self.latencies, self.outcomes, "CONFIRMED"),
                BROWSE: kind(self.browse_latencies, self.browse_outcomes, "OK")}

    def floor_multiples(self) -> dict[str, float | None] | None:
        """The per-checkout figures read against the floor: a checkout's CPU in bare hops' CPU and in
        bare commits' CPU, its median latency in bare round trips."""
        if self.floor is None:
            return None
        p50, cpu = self.percentile(50), self.cpu_ms_per_checkout

        def times(value: float | None, unit_us: float) -> float | None:
            return None if value is None or not unit_us else round(value / unit_us, 1)

        return {"cpu_per_checkout_in_hop_cpu": times(None if cpu is None else cpu * 1000, self.floor.hop_cpu_us),
                "cpu_per_checkout_in_commit_cpu": times(None if cpu is None else cpu * 1000,
                                                        self.floor.commit_cpu_us),
                "p50_in_hop_round_trips": times(None if p50 is None else p50 * 1e6, self.floor.hop_us)}

    def as_dict(self) -> dict:
        return {
            "checkouts": self.checkouts, "concurrency": self.concurrency, "seconds": round(self.seconds, 2),
            "loop": "closed" if self.rate is None else "open", "rate_per_s": self.rate,
            "achieved_rate_per_s": round(self.actions / self.seconds, 1) if self.seconds else 0.0,
            "late_to_start": self.late if self.rate is not None else None,
            "browse_percent": self.browse_percent,
            "confirmed": self.confirmed, "throughput_per_s": round(self.throughput, 1),
            "latency_ms": latency_ms(self.latencies),
            "kinds": self.kinds() if self.browse_percent else None,
            "outcomes": dict(self.outcomes), "processes": self.processes,
            "processes_total": {"cpu_s": round(self.cpu_s, 2), "cpu_ms_per_checkout": self.cpu_ms_per_checkout,
                                "rss_mb": round(sum(p["rss_mb"] for p in self.processes.values()), 1)},
            "sweep": self.sweep or None,
            "floor": self.floor.as_dict() if self.floor else None, "floor_multiples": self.floor_multiples(),
            "up_ready_seconds": self.ready_seconds, "read_model_lag_seconds": self.read_model_lag_seconds,
            "drained_seconds": self.drained_seconds,
            "trace_searchable_seconds": self.trace_searchable_seconds,
        }


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
                 telemetry_url: str | None = None, mail_catcher_url: str | None = None) -> None:
        """``urls``: the services' (and replicas') own addresses, for the requests each served;
        ``telemetry_url``: the telemetry component, to time how soon a trace can be found;
        ``mail_catcher_url``: to know when the checkouts' mail has gone out."""
        self.gateway = gateway.rstrip("/")
        self.admin_email = admin_email
        self.admin_password = admin_password
        self.pids = pids
        self.urls = urls or {}
        self.reports_timeout = reports_timeout
        self.telemetry_url = telemetry_url.rstrip("/") if telemetry_url else None
        self.mail_catcher_url = mail_catcher_url.rstrip("/") if mail_catcher_url else None

    async def run(self, checkouts: int, concurrency: int, *, rate: float | None = None,
                  browse_percent: float = 0.0, sweep: Sequence[int] = (), floor: bool = False,
                  seed: int = 0) -> BenchResult:
        """``checkouts`` checkouts (with browsing, ``browse_percent`` % of the user actions) by
        ``concurrency`` customers: a closed loop of ``concurrency`` workers, or with ``rate`` an
        open loop starting ``rate`` user actions per second. Then, per level of ``sweep``, a closed
        loop of ``checkouts`` more at that concurrency; with ``floor``, the bare hop and commit first."""
        customers = max(concurrency, *sweep) if sweep else concurrency
        in_flight = 512 if rate else customers * 2
        # Idle connections are dropped before uvicorn's 5 s keep-alive closes them: one reused just as
        # the server closed it fails with ServerDisconnectedError (the pauses between sweep levels).
        connector = aiohttp.TCPConnector(limit=in_flight, limit_per_host=in_flight, keepalive_timeout=2.0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
            admin = await login(http, f"{self.gateway}/api/users/login", self.admin_email, self.admin_password)
            skus = await self._stock_up(http, admin, checkouts * (1 + len(sweep)))
            tokens = await asyncio.gather(*(new_customer(http, self.gateway, "bench") for _ in range(customers)))
            result = BenchResult(checkouts, concurrency, 0.0, rate=rate, browse_percent=browse_percent)
            if floor:
                result.floor = await measure_floor()
            sales_before = await self._confirmed_in_report(http, admin)
            mails_before = await self._mails(http)
            trees = ProcessTrees(self.pids)
            trees.start()
            served_before = await self._served(http, admin)

            kinds = plan_actions(checkouts, browse_percent, seed)
            act = self._action(http, tokens[:concurrency], skus)
            start = time.perf_counter()
            if rate:
                samples = await open_loop(kinds, rate, act)
            else:
                samples = await closed_loop(kinds, concurrency, act)
            result.seconds = time.perf_counter() - start
            self._tally(samples, result)

            served = await self._served(http, admin)
            # The CPU counts until the checkouts' deferred work is done: a mode that defers more
            # (a busy monolith's mail, its report) must not look cheaper for it.
            result.read_model_lag_seconds, result.drained_seconds = await self._drain(
                http, admin, sales_before + result.confirmed, mails_before + result.confirmed)
            used = trees.cpu_used()
            result.cpu_s = sum(used.values())
            for name, pid in self.pids.items():
                per_checkout = round(used[name] * 1000 / result.confirmed, 2) if result.confirmed else None
                result.processes[name] = {"rss_mb": round(rss_mb(pid), 1), "cpu_s": round(used[name], 2),
                                          "cpu_ms_per_checkout": per_checkout}
                if name in served and name in served_before:
                    result.processes[name]["requests"] = int(served[name] - served_before[name])
            if self.telemetry_url:
                result.trace_searchable_seconds = await self._trace_searchable(http, tokens[0], skus[0])
            for level in sweep:
                result.sweep.append(await self._level(http, admin, tokens[:level], skus, level, kinds))
            return result

    async def _level(self, http, admin: str, tokens: list[str], skus: list[str], concurrency: int,
                     kinds: list[str]) -> dict:
        """One closed loop of the sweep: throughput, latency and CPU per checkout at ``concurrency``."""
        sales_before, mails_before = await self._confirmed_in_report(http, admin), await self._mails(http)
        trees = ProcessTrees(self.pids)
        trees.start()
        start = time.perf_counter()
        samples = await closed_loop(kinds, concurrency, self._action(http, tokens, skus))
        level = BenchResult(len(kinds), concurrency, time.perf_counter() - start)
        self._tally(samples, level)
        await self._drain(http, admin, sales_before + level.confirmed, mails_before + level.confirmed)
        level.cpu_s = sum(trees.cpu_used().values())
        return {"concurrency": concurrency, "seconds": round(level.seconds, 2), "confirmed": level.confirmed,
                "throughput_per_s": round(level.throughput, 1), "latency_ms": latency_ms(level.latencies),
                "errors": sum(level.outcomes.values()) - level.confirmed,
                "cpu_ms_per_checkout": level.cpu_ms_per_checkout}

    @staticmethod
    def _tally(samples: list[Sample], result: BenchResult) -> None:
        for sample in samples:
            result.late += sample.late
            if sample.kind == CHECKOUT:
                result.outcomes[sample.outcome] += 1
                if sample.outcome == "CONFIRMED":
                    result.latencies.append(sample.latency)
            else:
                result.browse_outcomes[sample.outcome] += 1
                if sample.outcome == "OK":
                    result.browse_latencies.append(sample.latency)

    def _action(self, http, tokens: list[str], skus: list[str]):
        """What user action n does: a checkout by customer n % C, or a catalog read (even n: the
        catalog's first page, odd n: one product's page, both as the storefront reads them)."""
        async def act(n: int, kind: str) -> str:
            try:
                if kind == CHECKOUT:
                    return await self._checkout(http, tokens[n % len(tokens)], skus[n % len(skus)])
                path = "products?limit=20" if n % 2 == 0 else f"products/{skus[n % len(skus)]}"
                async with http.get(f"{self.gateway}/api/inventory/{path}") as reply:
                    await reply.read()
                    return "OK" if reply.status == 200 else f"HTTP {reply.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                return type(exc).__name__

        return act

    async def _checkout(self, http, token: str, sku: str) -> str:
        """One order with the approved card, followed to its final status; that status, or why not."""
        headers = {"Authorization": f"Bearer {token}"}
        body = {"items": [{"sku": sku, "quantity": 1}], "payment": APPROVED_CARD}
        async with http.post(f"{self.gateway}/api/orders", json=body,
                             headers={**headers, "Idempotency-Key": str(uuid.uuid4())}) as response:
            answer = await response.json(content_type=None)
            status = response.status
        if status not in (201, 202):
            return f"HTTP {status}"
        while answer["status"] not in FINAL:  # 202: finishing in the background
            await asyncio.sleep(0.05)
            async with http.get(f"{self.gateway}/api/orders/{answer['id']}", headers=headers) as r:
                answer = await r.json()
        return answer["status"]

    async def _trace_searchable(self, http, token: str, sku: str) -> float | None:
        """How long after one more checkout's answer (the system quiet) the telemetry component
        finds its trace by the order id, as the console's search does. The checkout asks to be
        traced (a sampled W3C traceparent): right after the load, the gateway would otherwise
        still be keeping only a share of its traces."""
        body = {"items": [{"sku": sku, "quantity": 1}], "payment": APPROVED_CARD}
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4()),
                   "traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"}
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

    async def _mails(self, http) -> int:
        if self.mail_catcher_url is None:
            return 0
        async with http.get(f"{self.mail_catcher_url}/api/messages", params={"limit": "0"}) as r:
            return (await r.json())["total"] if r.status == 200 else 0

    async def _drain(self, http, admin: str, sales: int, mails: int) -> tuple[float | None, float | None]:
        """Seconds after the last checkout until the event-built sales report counts ``sales``
        orders, and until that and the mail catcher holds ``mails`` messages (each confirmed order
        mails its customer); None for what did not happen within the timeout."""
        start = time.perf_counter()
        report_lag = None
        while time.perf_counter() - start < self.reports_timeout:
            if report_lag is None and await self._confirmed_in_report(http, admin) >= sales:
                report_lag = round(time.perf_counter() - start, 2)
            if report_lag is not None and (self.mail_catcher_url is None or await self._mails(http) >= mails):
                return report_lag, round(time.perf_counter() - start, 2)
            await asyncio.sleep(0.05)
        return report_lag, None


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
    mail_catcher_url: str | None = None
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
                     pids=_with_fork_server({name: p["pid"] for name, p in processes.items()},
                                            state.get("fork_server_pid")),
                     urls={name: p["url"] for name, p in processes.items() if p.get("service")},
                     telemetry_url=processes.get("telemetry", {}).get("url"),
                     storefront_url=processes.get("storefront", {}).get("url"),
                     mail_catcher_url=processes.get("mail-catcher", {}).get("url"))
        return
    with tempfile.TemporaryDirectory(prefix="microshop-bench-") as tmp:
        async with fresh(SystemConfig.with_free_ports(Path(tmp))) as system:
            yield system


@asynccontextmanager
async def fresh(config: SystemConfig) -> AsyncIterator[BenchedSystem]:
    """A system started from ``config`` (with free ports and a temporary data dir), stopped on the way out."""
    started = time.perf_counter()
    async with System(config) as system:
        ready = time.perf_counter() - started
        names = system.names
        yield BenchedSystem(system.url("gateway"), system.admin_email, system.admin_password,
                            pids=_with_fork_server({name: system.pid(name) for name in names},
                                                   system.fork_server_pid),
                            urls={name: system.url(name) for name in names if system.component(name).service},
                            telemetry_url=system.url("telemetry") if "telemetry" in names else None,
                            storefront_url=system.url("storefront") if "storefront" in names else None,
                            mail_catcher_url=system.url("mail-catcher") if "mail-catcher" in names else None,
                            ready_seconds=round(system.ready_seconds or ready, 2))


def _with_fork_server(pids: dict[str, int], fork_server: int | None) -> dict[str, int]:
    """The components' pids, and the fork server's: the pages it shares with them are part of the
    system's memory (its own CPU only: its children are components of their own)."""
    return {**pids, FORK_SERVER: fork_server} if fork_server else pids


async def run_bench(target: BenchedSystem, checkouts: int, concurrency: int, **options) -> BenchResult:
    """The bench against ``target``; ``options``: those of :meth:`Bench.run`."""
    runner = Bench(target.gateway, target.admin_email, target.admin_password, target.pids, urls=target.urls,
                   telemetry_url=target.telemetry_url, mail_catcher_url=target.mail_catcher_url)
    result = await runner.run(checkouts, concurrency, **options)
    result.ready_seconds = target.ready_seconds
    return result


async def bench(data_dir: Path, checkouts: int, concurrency: int, **options) -> BenchResult:
    async with running_or_fresh(data_dir) as target:
        return await run_bench(target, checkouts, concurrency, **options)
