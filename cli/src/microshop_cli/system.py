"""Start, supervise and stop the whole system: the machinery behind ``microshop up`` and the
whole-system tests.

    async with System(SystemConfig.with_free_ports(tmp_path)) as system:   # started, ready, seeded
        system.url("gateway"); system.kill("orders"); await system.wait_ready("orders")
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.metadata
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from microshop_chassis.broker import prepare_streams

from . import forkserver, nats_cluster, postgres, scaling
from .components import (
    CHAOS_PORTS,
    DEFAULT_PORTS,
    HOST,
    MONOLITH,
    Component,
    ComponentFactory,
    broker_env,
    check_ports_free,
    default_components,
    free_ports,
    operator_broker_url,
    process_env,
    replica,
    replica_name,
)
from .control import ControlServer
from .errors import MicroshopError, StartupError
from .logtail import tail_lines
from .seed import SeedReport, seed_catalog
from .state import (
    DataDir,
    SupervisorLock,
    held_for,
    hold,
    nats_passwords,
    service_secret,
    write_state,
    write_text_atomically,
)

log = logging.getLogger("microshop.supervisor")
logging.getLogger("microshop").addHandler(logging.NullHandler())

POLL_INTERVAL = 0.05
PROBE_TIMEOUT = 1.0
# How long the fork server may take to import what it preloads before components start without it.
FORK_SERVER_TIMEOUT = 30.0
PR_SET_PDEATHSIG = 1
# Children create files for this user only: SQLite databases and their WAL, DuckDB, NATS' store.
CHILD_UMASK = 0o077


@dataclass(frozen=True)
class BackoffPolicy:
    initial: float = 0.5
    maximum: float = 10.0
    # A process that stayed up this long is healthy again: its next restart is quick.
    reset_after: float = 30.0


class Backoff:
    def __init__(self, policy: BackoffPolicy) -> None:
        self.policy = policy
        self._next = policy.initial

    def next_delay(self, uptime: float) -> float:
        if uptime >= self.policy.reset_after:
            self._next = self.policy.initial
        delay = self._next
        self._next = min(delay * 2, self.policy.maximum)
        return delay


@dataclass
class SystemConfig:
    data_dir: Path = Path(".microshop")
    # Port per name (see components.DEFAULT_PORTS); missing names take the default.
    ports: dict[str, int] = field(default_factory=dict)
    # Added to every child's environment last, so it wins.
    extra_env: dict[str, str] = field(default_factory=dict)
    seed: bool = True
    components: ComponentFactory = default_components
    host: str = HOST
    ready_timeout: float = 60.0  # per start step
    # Per process, then SIGKILL: a service drains for up to MICROSHOP_DRAIN_SECONDS (10 s by default)
    # after SIGTERM, then stops its parts; the margin keeps a full drain from being cut.
    stop_timeout: float = 15.0
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    # A fault-injection proxy in front of every service (``microshop chaos``), seeded for replay.
    chaos_proxies: bool = False
    chaos_seed: int = 0
    # None: SQLite files in the data dir. postgres.EMBEDDED: a PostgreSQL the supervisor runs in the
    # data dir. A postgresql:// URL: an existing server (a role that may create roles and databases).
    postgres: str | None = None
    # Put before every database and role name on an existing server: two systems can share one.
    postgres_prefix: str = ""
    # Three NATS nodes keeping the streams three times (nats_cluster.py) instead of one.
    nats_cluster: bool = False
    # Replicas per service at start (1 where not named); see scaling.py for which may have more.
    replicas: dict[str, int] = field(default_factory=dict)
    # The six services and the gateway in one process on the gateway's port (microshop_monolith),
    # as ``workers`` processes sharing that port (more than one needs PostgreSQL).
    monolith: bool = False
    workers: int = 1
    # Let the kernel merge the identical pages of the fork server and its children (forkserver.py).
    merge_pages: bool = False

    def __post_init__(self) -> None:
        # Absolute, because children and a detached supervisor may not share our working directory.
        self.data_dir = Path(self.data_dir).resolve()
        nats_port = self.ports.get("nats", DEFAULT_PORTS["nats"])
        scaling.check_monolith(self.monolith, self.workers, postgres=self.postgres is not None,
                               replicas=self.replicas, chaos_proxies=self.chaos_proxies)
        for service, count in self.replicas.items():
            scaling.check_replicas(service, count, postgres=self.postgres is not None)
            if count > 1 and self.chaos_proxies:
                raise MicroshopError("--chaos-proxies puts one proxy in front of each service, so it runs "
                                     "without replicas; with replicas, faults come from kills "
                                     "(microshop chaos kill payments-2)")
        # The first replica has the service's port; the others take free ones (`-p payments-2=PORT` pins one).
        extra = [replica_name(service, index) for service, count in self.replicas.items()
                 for index in range(2, count + 1) if replica_name(service, index) not in self.ports]
        self.ports = {**DEFAULT_PORTS, **CHAOS_PORTS, **nats_cluster.derived_ports(nats_port), **free_ports(extra),
                      **self.ports}

    @classmethod
    def with_free_ports(cls, data_dir: Path, **options) -> SystemConfig:
        ports = {**free_ports([*DEFAULT_PORTS, *CHAOS_PORTS, *nats_cluster.PORT_NAMES]), **options.pop("ports", {})}
        return cls(data_dir=data_dir, ports=ports, **options)


@dataclass
class _Managed:
    component: Component
    backoff: Backoff
    process: asyncio.subprocess.Process | None = None
    started_at: datetime | None = None
    started_monotonic: float = 0.0
    restarts: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    supervisor: asyncio.Task | None = None


class System:
    def __init__(self, config: SystemConfig) -> None:
        self.config = config
        self.paths = DataDir(config.data_dir)
        components = sorted(config.components(config), key=lambda component: component.step)
        self._managed = {c.name: _Managed(c, Backoff(config.backoff)) for c in components}
        if len(self._managed) != len(components):
            raise MicroshopError("component names must be unique")
        self.env: dict[str, str] = {}
        self._broker_passwords: dict[str, str] = {}
        self.postgres: postgres.PostgresPlan | None = None
        self._postgres_connections = postgres.MAX_CONNECTIONS  # the server's, once provisioned
        self.ready_seconds: float | None = None
        self.seed_report: SeedReport | None = None
        self._lock = SupervisorLock(self.paths)
        self._session: aiohttp.ClientSession | None = None
        # The fork server (forkserver.py) and whether it answered; None: every component is exec'd.
        self._fork_server: asyncio.subprocess.Process | None = None
        self._fork_server_up: asyncio.Task[bool] | None = None
        self._started_at: datetime | None = None
        self._status = "stopped"
        self._stopping: asyncio.Future | None = None
        self._changing = asyncio.Lock()  # one scale or deploy at a time
        self._replicas_started = dict(config.replicas)  # per service, the highest replica number so far
        self._control = ControlServer(self)  # how `microshop scale` and `deploy` reach us

    # --- the API tests use -------------------------------------------------------------------

    async def __aenter__(self) -> System:
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    @property
    def names(self) -> list[str]:
        return list(self._managed)

    @property
    def admin_email(self) -> str:
        return self.env["MICROSHOP_ADMIN_EMAIL"]

    @property
    def admin_password(self) -> str:
        return self.env["MICROSHOP_ADMIN_PASSWORD"]

    @property
    def broker_url(self) -> str:
        """NATS with the operator's credentials (each service has a user of its own)."""
        return operator_broker_url(self.config, self._broker_passwords)

    def broker_password(self, user: str) -> str:
        return self._broker_passwords[user]

    def component(self, name: str) -> Component:
        return self._get(name).component

    def url(self, name: str) -> str:
        """Where ``name`` answers; a service run in-process by the monolith: its operations
        (health, ready, metrics) under ``/_services/<name>`` of the monolith's port."""
        component = self._get(name).component
        if name in (component.name, component.service):
            return component.url
        return f"{component.url}/_services/{name}"

    def port(self, name: str) -> int:
        return self._get(name).component.port

    @property
    def fork_server_pid(self) -> int | None:
        """The fork server's (forkserver.py): the parent of the Python components, none when off."""
        server = self._fork_server
        return server.pid if server is not None and server.returncode is None else None

    def pid(self, name: str) -> int | None:
        process = self._get(name).process
        return process.pid if process else None

    def restarts(self, name: str) -> int:
        return self._get(name).restarts

    def is_ready(self, name: str) -> bool:
        return self._get(name).ready.is_set()

    def kill(self, name: str, sig: int = signal.SIGKILL, *, down_for: float = 0.0) -> int:
        """Signal the component's current process (as a crash would) and return its pid. It counts as
        not ready from now on, so a following ``wait_ready`` waits for the restarted process. With
        ``down_for``, the supervisor waits that long before restarting it."""
        managed = self._get(name)
        if managed.process is None:
            raise MicroshopError(f"{name} has no process")
        if down_for > 0:
            hold(self.paths, name, down_for)
        managed.ready.clear()
        os.kill(managed.process.pid, sig)
        return managed.process.pid

    def release(self, name: str) -> None:
        """End a ``down_for`` early: the supervisor restarts the component now."""
        self.paths.hold_file(self._get(name).component.name).unlink(missing_ok=True)

    async def wait_ready(self, name: str, timeout: float = 30.0) -> int:
        """Wait until the component answers its readiness check; return its pid."""
        managed = self._get(name)
        try:
            await asyncio.wait_for(managed.ready.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"{name} was not ready within {timeout:g} s") from None
        return managed.process.pid

    def state(self) -> dict:
        gateway = self._managed.get("gateway") or self._managed.get(MONOLITH)
        return {
            "supervisor_pid": os.getpid(),
            "started_at": _iso(self._started_at),
            "status": self._status,
            "data_dir": str(self.paths.root),
            "gateway_url": gateway.component.url if gateway else None,
            "ready_seconds": self.ready_seconds,
            # Parent of the Python components (forkserver.py); its memory is theirs, shared.
            "fork_server_pid": self.fork_server_pid,
            "merge_pages": self.config.merge_pages,
            "databases": postgres.describe_databases(self.postgres, self.env),
            "processes": {
                name: {
                    "pid": managed.process.pid,
                    "port": managed.component.port,
                    "url": managed.component.url,
                    "health_url": managed.component.health_url,
                    "restarts": managed.restarts,
                    "started_at": _iso(managed.started_at),
                    "service": managed.component.service,
                    **({"modules": list(managed.component.modules)} if managed.component.modules else {}),
                }
                for name, managed in self._managed.items()
                if managed.process is not None
            },
        }

    def scrape_targets(self) -> list[dict]:
        """Every running service process (replicas included) as a Prometheus file_sd target group:
        what the telemetry component scrapes, and what a Prometheus could read with file_sd_configs."""
        return [
            {"targets": [f"{managed.component.host}:{managed.component.port}"],
             "labels": {"service": managed.component.service, "instance": name,
                        "release": managed.component.release or _package_version(managed.component.service)}}
            for name, managed in self._managed.items()
            if managed.process is not None and managed.component.service
        ]

    # --- replicas: scale and deploy ------------------------------------------------------------

    def replicas(self, service: str) -> list[str]:
        """The names of ``service``'s replicas, oldest first."""
        return [name for name, managed in self._managed.items() if managed.component.service == service]

    async def scale(self, service: str, count: int) -> dict:
        """Start or stop replicas of ``service`` until it has ``count``: a new one serves once
        ready (callers hear of it then); one that goes drains first (the newest go first)."""
        scaling.check_replicas(service, count, postgres=self.postgres is not None)
        if self.config.monolith:
            raise MicroshopError("the monolith scales as a whole: start it with `microshop up --monolith --workers N "
                                 "--postgres`")
        async with self._changing:
            current = self.replicas(service)
            if not current:
                raise MicroshopError(f"{service} is not part of this system")
            began = time.monotonic()
            added = [await self._add_replica(service) for _ in range(count - len(current))]
            removed = list(reversed(current))[:max(0, len(current) - count)]
            for name in removed:
                await self._retire(self._managed[name])
            self._log(logging.INFO, "%s scaled from %d to %d replicas in %.2f s", service, len(current), count,
                      time.monotonic() - began)
            return {"service": service, "replicas": self.replicas(service), "added": added, "removed": removed,
                    "seconds": round(time.monotonic() - began, 2)}

    async def deploy(self, service: str, release: str | None = None, *, env: dict[str, str] | None = None,
                     ready_timeout: float | None = None) -> dict:
        """Replace ``service``'s replicas one at a time: start a new one (``release`` labels it,
        ``env`` changes its configuration), wait until it is ready, then drain and stop an old one.
        If a new replica never becomes ready, it is stopped, the replicas already replaced are
        replaced back (rollback) and ``DeployFailed`` is raised: the service runs as before."""
        async with self._changing:
            old = self.replicas(service)
            if not old:
                raise MicroshopError(f"{service} is not part of this system")
            began = time.monotonic()
            done: list[tuple[str, Component]] = []  # (new replica, the old one it replaced)
            for name in old:
                previous = self._managed[name].component
                try:
                    new = await self._add_replica(service, release=release, env=env, ready_timeout=ready_timeout,
                                                  template=previous)
                except StartupError as exc:
                    self._log(logging.ERROR, "deploy of %s stopped: %s; rolling back %d replaced replica(s)",
                              service, exc, len(done))
                    for replaced_by, was in reversed(done):
                        await self._add_replica(service, release=was.release, template=was)
                        await self._retire(self._managed[replaced_by])
                    raise DeployFailed(f"{service}: a new replica never became ready, so the rollout was rolled "
                                       f"back and {service} runs as before. {exc}") from exc
                await self._retire(self._managed[name])
                done.append((new, previous))
            seconds = time.monotonic() - began
            self._log(logging.INFO, "%s deployed (release %s) in %.2f s: %s replaced by %s", service,
                      release or "unchanged", seconds, ", ".join(old), ", ".join(new for new, _ in done))
            return {"service": service, "release": release, "replaced": old, "replicas": self.replicas(service),
                    "seconds": round(seconds, 2)}

    async def _add_replica(self, service: str, *, release: str | None = None, env: dict[str, str] | None = None,
                           ready_timeout: float | None = None, template: Component | None = None) -> str:
        """Start one more replica of ``service`` (like ``template``, by default its newest), wait
        until it is ready, then supervise it. Raises ``StartupError`` (the replica is stopped)."""
        template = template or self._managed[self.replicas(service)[-1]].component
        # Never a name used before in this run: logs, metrics and `status` tell old and new apart.
        index = self._replicas_started[service] = self._replicas_started.get(service, 1) + 1
        while replica_name(service, index) in self._managed:  # started from a list with gaps
            index = self._replicas_started[service] = index + 1
        port = free_ports(["replica"], self.config.host)["replica"]
        if release is None:
            release = template.release
        managed = _Managed(replica(template, index, port, release=release, env=env), Backoff(self.config.backoff))
        self._managed[managed.component.name] = managed
        deadline = time.monotonic() + (ready_timeout or self.config.ready_timeout)
        try:
            await self._start_until_ready(managed, deadline)
        except BaseException:
            await self._terminate(managed)
            del self._managed[managed.component.name]
            self._write_state()
            raise
        managed.supervisor = asyncio.create_task(self._supervise(managed))
        managed.supervisor.add_done_callback(self._report_supervisor_crash)
        self._write_state()
        return managed.component.name

    async def _retire(self, managed: _Managed) -> None:
        """Stop supervising one replica, then stop it: SIGTERM makes it drain (callers stop
        choosing it at once; what it accepted, it finishes)."""
        if managed.supervisor is not None:
            managed.supervisor.cancel()
            await asyncio.gather(managed.supervisor, return_exceptions=True)
        began = time.monotonic()
        await self._terminate(managed)
        del self._managed[managed.component.name]
        self._log(logging.INFO, "%s drained and stopped in %.2f s (exit code %s)", managed.component.name,
                  time.monotonic() - began, managed.process.returncode if managed.process else None)
        self._write_state()

    # --- start ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every component step by step, wait until all are ready, then seed. On any failure
        (or cancellation) whatever was started is stopped again before the error propagates."""
        began = time.monotonic()
        tightened = self.paths.create()
        self._lock.acquire()
        for folder in tightened:
            self._log(logging.WARNING, "%s was readable by other users; its mode is now 0700", folder)
        for stale in self.paths.run.glob("hold-*"):  # left by an earlier run's `chaos kill --down-for`
            stale.unlink(missing_ok=True)
        try:
            check_ports_free([managed.component for managed in self._managed.values()])
            secret = self.config.extra_env.get("MICROSHOP_SERVICE_SECRET") or os.environ.get(
                "MICROSHOP_SERVICE_SECRET") or service_secret(self.paths)
            self._broker_passwords = nats_passwords(self.paths)
            if self.config.nats_cluster:
                nats_cluster.write_configs(self.config, self._broker_passwords)
            self.env = process_env(self.config, secret)
            self.postgres = postgres.plan(self.config, self.paths)
            if self.postgres and self.postgres.embedded:
                if await asyncio.to_thread(postgres.initialise_cluster, self.paths):
                    self._log(logging.INFO, "PostgreSQL cluster created in %s", self.paths.postgres)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT),
                connector=aiohttp.TCPConnector(force_close=True),  # no pooled sockets to dead processes
            )
            self._started_at = datetime.now(UTC)
            self._status = "starting"
            self._write_state()
            self._log(logging.INFO, "starting %d components in %s", len(self._managed), self.paths.root)
            await self._start_fork_server()
            databases_ready = self.postgres is None
            streams_ready = not self.config.nats_cluster
            for step in self._steps():
                if not databases_ready and any(set(m.component.runs) & set(postgres.relational_services())
                                               for m in step):
                    await self._provision_databases()
                    databases_ready = True
                if not streams_ready and not any(m.component.name in nats_cluster.NODES for m in step):
                    await self._prepare_streams()
                    streams_ready = True
                await self._start_step(step)
            if not streams_ready:  # a component list of the NATS nodes alone
                await self._prepare_streams()
            self.ready_seconds = time.monotonic() - began
            self._log(logging.INFO, "all components ready in %.2f s", self.ready_seconds)
            for managed in self._managed.values():
                managed.supervisor = asyncio.create_task(self._supervise(managed))
                managed.supervisor.add_done_callback(self._report_supervisor_crash)
            if self.config.seed and ("gateway" in self._managed or MONOLITH in self._managed):
                await self._seed()
            if not await self._control.start():
                self._log(logging.WARNING, "no control socket (its path is too long): scale and deploy "
                          "need a shorter --data-dir")
            self._status = "running"
            self._write_state()
        except BaseException:
            await self.stop()
            raise

    async def _provision_databases(self) -> None:
        """Before the first service starts (and after the embedded server is ready)."""
        began = time.monotonic()
        self._postgres_connections = await postgres.provision(self.postgres, self.paths.root,
                                                              timeout=self.config.ready_timeout)
        self._log(logging.INFO, "PostgreSQL databases ready at %s:%d in %.2f s", self.postgres.host,
                  self.postgres.port, time.monotonic() - began)

    async def _prepare_streams(self) -> None:
        """After the NATS nodes, before any service: the streams with a copy on every node."""
        began = time.monotonic()
        await prepare_streams(self.broker_url, replicas=nats_cluster.REPLICAS, timeout=self.config.ready_timeout)
        self._log(logging.INFO, "NATS cluster ready, streams kept %d times, in %.2f s", nats_cluster.REPLICAS,
                  time.monotonic() - began)

    def _steps(self) -> list[list[_Managed]]:
        steps: dict[int, list[_Managed]] = {}
        for managed in self._managed.values():
            steps.setdefault(managed.component.step, []).append(managed)
        return [steps[number] for number in sorted(steps)]

    async def _start_step(self, step: list[_Managed]) -> None:
        deadline = time.monotonic() + self.config.ready_timeout
        tasks = [asyncio.create_task(self._start_until_ready(managed, deadline)) for managed in step]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _start_until_ready(self, managed: _Managed, deadline: float) -> None:
        await self._spawn(managed)
        name, process = managed.component.name, managed.process
        while not await self._probe_ready(managed.component):
            if process.returncode is not None:
                problem = f"{name} exited with code {process.returncode} before it was ready"
                raise StartupError(problem + self._log_tail(name))
            if time.monotonic() > deadline:
                problem = f"{name} was not ready within {self.config.ready_timeout:g} s"
                raise StartupError(problem + self._log_tail(name))
            await asyncio.sleep(POLL_INTERVAL)
        managed.ready.set()
        self._log(logging.INFO, "%s ready (pid %d) after %.2f s", name, process.pid,
                  time.monotonic() - managed.started_monotonic)

    async def _spawn(self, managed: _Managed) -> None:
        component = managed.component
        managed.started_monotonic = time.monotonic()
        log_path = self.paths.log_file(component.name)
        descriptor = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "ab") as log_file:
            log_file.write(f"----- {_iso(datetime.now(UTC))} microshop: starting {component.name}: "
                           f"{shlex.join(component.command)}\n".encode())
            log_file.flush()
            # Its replica settings, and its own secrets (broker user, database URL) only: never in
            # the environment all share.
            own = dict(component.env)
            sharing = self._database_processes()
            for service in component.runs:
                own.update(broker_env(service, self._broker_passwords, prefixed=bool(component.modules)))
                own.update(postgres.database_env(service, self.postgres, processes=sharing,
                                                 max_connections=self._postgres_connections))
            account = {"user": component.user, "group": component.user, "extra_groups": []} if component.user else {}
            env = {**self.env, **own}
            forked = None if account else await self._forked(component, env, log_file.fileno())
            try:
                managed.process = forked or await asyncio.create_subprocess_exec(
                    *component.command,
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                    env=env, **account,
                    # Own session: Ctrl-C in the terminal reaches the supervisor only, which stops in order.
                    start_new_session=True,
                    preexec_fn=_child_setup(os.getpid()),
                )
            except OSError as exc:
                raise StartupError(f"cannot start {component.name}: {exc}") from exc
        managed.started_at = datetime.now(UTC)
        self._log(logging.INFO, "started %s (pid %d)", component.name, managed.process.pid)
        self._write_state()

    async def _forked(self, component: Component, env: dict[str, str], log_fd: int) -> forkserver.ForkedProcess | None:
        """``component`` forked by the fork server; None when it is not a ``python -m`` or the server
        cannot (then it is exec'd, as without one)."""
        module = forkserver.python_module(component.command)
        if module is None or not await self._fork_server_ready():
            return None
        try:
            return await forkserver.fork(self.paths.fork_server_socket, *module, env, log_fd)
        except (OSError, TimeoutError) as exc:
            self._log(logging.WARNING, "the fork server could not start %s (%s): starting it on its own",
                      component.name, exc)
            return None

    async def _start_fork_server(self) -> None:
        """Start the fork server unless MICROSHOP_FORK_SERVER=0 or no component is a ``python -m``;
        the components that come first (NATS) do not wait for its imports."""
        if self.env.get("MICROSHOP_FORK_SERVER", "1") == "0":
            if self.config.merge_pages:
                self._log(logging.WARNING, "--merge-pages merges the pages of forked components; with "
                          "MICROSHOP_FORK_SERVER=0 none is forked, so nothing is merged")
            return
        modules = [forkserver.python_module(m.component.command) for m in self._managed.values()]
        packages = sorted({module for module, _args in filter(None, modules)})
        if not packages:
            return  # nothing it could start
        log = self.paths.log_file("fork-server").open("ab")  # noqa: ASYNC230, SIM115 - the child holds it; closed below
        try:
            self._fork_server = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "microshop_cli.forkserver", "--socket", str(self.paths.fork_server_socket),
                *(argument for package in packages for argument in ("--preload", package)),
                *(["--merge-pages"] if self.config.merge_pages else []),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**forkserver.MALLOC_ENV, **self.env},  # the children inherit its allocator's settings
                start_new_session=True, preexec_fn=_child_setup(os.getpid()))
        except OSError as exc:
            self._log(logging.WARNING, "no fork server (%s): every component starts on its own", exc)
            return
        finally:
            log.close()
        self._fork_server_up = asyncio.ensure_future(self._await_fork_server())
        if self.config.merge_pages and not forkserver.ksm_running():
            self._log(logging.WARNING, "--merge-pages: the kernel does not merge pages now (KSM is off; as root: "
                      "echo 1 > %s), so memory stays as without it", forkserver.KSM_RUN)

    async def _await_fork_server(self) -> bool:
        deadline = time.monotonic() + FORK_SERVER_TIMEOUT
        while time.monotonic() < deadline and self._fork_server.returncode is None:
            if self.paths.fork_server_socket.exists():
                return True
            await asyncio.sleep(0.02)
        self._log(logging.WARNING, "the fork server did not come up: every component starts on its own")
        return False

    async def _fork_server_ready(self) -> bool:
        if self._fork_server_up is None or self._fork_server is None or self._fork_server.returncode is not None:
            return False
        return await asyncio.shield(self._fork_server_up)

    async def _stop_fork_server(self) -> None:
        server, self._fork_server = self._fork_server, None
        if self._fork_server_up is not None:
            self._fork_server_up.cancel()
        if server is None or server.returncode is not None:
            return
        server.terminate()
        try:
            await asyncio.wait_for(server.wait(), self.config.stop_timeout)
        except TimeoutError:
            server.kill()
            await server.wait()

    def _database_processes(self) -> int:
        """Processes (replicas included) that use the PostgreSQL server: they share its connections."""
        relational = postgres.relational_services()
        return sum(len(set(m.component.runs) & set(relational)) * m.component.workers for m in self._managed.values())

    async def _probe_ready(self, component: Component) -> bool:
        if component.ready_url is None:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(component.host, component.port),
                                                   PROBE_TIMEOUT)
            except (OSError, TimeoutError):
                return False
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        try:
            async with self._session.get(component.ready_url) as reply:
                return reply.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _seed(self) -> None:
        began = time.monotonic()
        self.seed_report = await seed_catalog(self.url("gateway"), email=self.admin_email,
                                              password=self.admin_password)
        self._log(logging.INFO, "catalog seeded in %.2f s: %d created, %d already there",
                  time.monotonic() - began, len(self.seed_report.created), len(self.seed_report.existing))

    # --- supervise -----------------------------------------------------------------------------

    async def _supervise(self, managed: _Managed) -> None:
        """Restart the component whenever its process exits, with exponential backoff."""
        name = managed.component.name
        while True:
            code = await managed.process.wait()
            managed.ready.clear()
            uptime = time.monotonic() - managed.started_monotonic
            delay = managed.backoff.next_delay(uptime)
            self._log(logging.WARNING, "%s (pid %d) exited with code %s after %.1f s; restarting in %.1f s",
                      name, managed.process.pid, code, uptime, delay)
            await asyncio.sleep(delay)
            # `chaos kill --down-for` (another process) writes a file: polled, as there is no event to wait on.
            while (held := held_for(self.paths, name)) > 0:  # noqa: ASYNC110
                await asyncio.sleep(min(held, POLL_INTERVAL * 2))
            managed.restarts += 1
            try:
                await self._spawn(managed)
            except StartupError as exc:
                self._log(logging.ERROR, "%s", exc)
                continue  # the old, exited process is still recorded: wait() returns at once, next backoff
            while not await self._probe_ready(managed.component):
                if managed.process.returncode is not None:
                    break
                await asyncio.sleep(POLL_INTERVAL)
            else:
                managed.ready.set()
                self._log(logging.INFO, "%s ready again (pid %d, restart %d)", name, managed.process.pid,
                          managed.restarts)

    def _report_supervisor_crash(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._log(logging.ERROR, "supervision stopped by a bug: %r", task.exception())

    # --- stop ----------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop in reverse start order: SIGTERM, up to stop_timeout, then SIGKILL. Safe to call twice."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        # Shielded: a caller being cancelled must not leave half the system running.
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        if not self._lock.held:
            return
        began = time.monotonic()
        self._status = "stopping"
        self._write_state()
        self._log(logging.INFO, "stopping")
        supervisors = [managed.supervisor for managed in self._managed.values() if managed.supervisor]
        for task in supervisors:
            task.cancel()
        await asyncio.gather(*supervisors, return_exceptions=True)
        await self._control.stop()
        for step in reversed(self._steps()):
            await asyncio.gather(*(self._terminate(managed) for managed in step))
        await self._stop_fork_server()
        self.paths.state_file.unlink(missing_ok=True)
        self.paths.scrape_targets_file.unlink(missing_ok=True)
        if self._session:
            await self._session.close()
        self._status = "stopped"
        self._log(logging.INFO, "stopped in %.2f s", time.monotonic() - began)
        self._lock.release()

    async def _terminate(self, managed: _Managed) -> None:
        process = managed.process
        managed.ready.clear()
        if process is None or process.returncode is not None:
            return
        # The whole process group: anything the component started goes too.
        _signal_group(process.pid, managed.component.stop_signal)
        try:
            await asyncio.wait_for(process.wait(), self.config.stop_timeout)
        except TimeoutError:
            self._log(logging.WARNING, "%s (pid %d) ignored %s for %g s; killing it", managed.component.name,
                      process.pid, signal.Signals(managed.component.stop_signal).name, self.config.stop_timeout)
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()

    # --- helpers -------------------------------------------------------------------------------

    def _get(self, name: str) -> _Managed:
        managed = self._managed.get(name)
        if managed is None:  # a service run in-process by another component (the monolith)
            managed = next((m for m in self._managed.values() if name in m.component.modules), None)
        if managed is None:
            raise MicroshopError(f"no component {name!r}; known: {', '.join(self._managed)}")
        return managed

    def _write_state(self) -> None:
        write_state(self.paths, self.state())
        write_text_atomically(self.paths.scrape_targets_file, json.dumps(self.scrape_targets(), indent=2) + "\n")

    def _log(self, level: int, message: str, *args) -> None:
        text = message % args
        log.log(level, text)
        with self.paths.supervisor_log.open("a") as file:
            file.write(f"{_iso(datetime.now(UTC))} {logging.getLevelName(level)} {text}\n")

    def _log_tail(self, name: str, lines: int = 15) -> str:
        tail = tail_lines(self.paths.log_file(name), lines)
        return f"; last lines of {self.paths.log_file(name)}:\n" + "\n".join(tail) if tail else ""


class DeployFailed(MicroshopError):
    """A rollout stopped because a new replica never became ready; the old replicas run on."""


def _package_version(service: str) -> str:
    """The release a service runs when no deploy named one: its package's version, as /health says."""
    try:
        return importlib.metadata.version(f"microshop-{service}")
    except importlib.metadata.PackageNotFoundError:
        return ""


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z") if moment else None


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _child_setup(parent_pid: int) -> Callable[[], None]:
    """Runs in the child between fork and exec: a private umask, and on Linux, ask for SIGTERM
    when the supervisor dies, so a SIGKILLed supervisor takes its children with it."""

    def setup() -> None:
        os.umask(CHILD_UMASK)
        if _libc is None:
            return
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
            os._exit(1)

    return setup


async def run_until_signalled(
    config: SystemConfig, on_ready: Callable[[System], Awaitable[None] | None] | None = None
) -> System:
    """``microshop up`` in the foreground: start, call ``on_ready``, supervise until SIGINT or SIGTERM,
    then stop cleanly. A signal during start-up stops what was started so far."""
    system = System(config)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_requested.set)
    try:
        starting = asyncio.create_task(system.start())
        waiting = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return system
        starting.result()  # start-up errors propagate (start has stopped everything already)
        if on_ready:
            result = on_ready(system)
            if asyncio.iscoroutine(result):
                await result
        await stop_requested.wait()
        await system.stop()
        return system
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
