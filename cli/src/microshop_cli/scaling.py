"""Which services may run as several replicas, and how ``--replicas``/``scale`` are written.

A service scales when its replicas can share its data: a SQL service on PostgreSQL (each replica
a process of its own with its own port, all on the service's one database; leases and row locks
keep two replicas from doing the same work, see docs/ARCHITECTURE.md). It does not when one
process must own the data: a SQLite file (one writer at a time), reports' DuckDB file (one
writer), and the gateway, which is the one public port here (behind a platform's load balancer
it scales like any stateless process).
"""

from __future__ import annotations

from microshop_chassis import services as registry

from .errors import MicroshopError

MAX_REPLICAS = 8


def parse_counts(values: list[str] | str) -> dict[str, int]:
    """``["payments=3", "orders=2"]`` or ``"payments=3,orders=2"`` -> ``{"payments": 3, "orders": 2}``."""
    items = [item.strip() for value in ([values] if isinstance(values, str) else values)
             for item in value.split(",") if item.strip()]
    counts: dict[str, int] = {}
    for item in items:
        name, equals, number = item.partition("=")
        if not equals or not name.strip() or not number.strip().isdigit():
            raise MicroshopError(f"replicas must look like SERVICE=N (payments=3), not {item!r}")
        counts[name.strip()] = int(number)
    return counts


def check_replicas(service: str, count: int, *, postgres: bool) -> None:
    """Raise, saying why and what to do instead, unless ``service`` may run ``count`` replicas."""
    if service not in registry.names():
        raise MicroshopError(f"no service named {service!r}; services: {', '.join(registry.names())}")
    if not 1 <= count <= MAX_REPLICAS:
        raise MicroshopError(f"{service}: replicas must be between 1 and {MAX_REPLICAS}, not {count}")
    if count == 1:
        return
    spec = registry.service(service)
    if spec.storage == "duckdb":
        raise MicroshopError(
            f"{service} cannot scale: its read model is one DuckDB file, which one process writes. It runs as "
            "one replica; its consumer catches up with the events of however many replicas the others run.")
    if spec.storage == "none":
        raise MicroshopError(
            f"{service} is the one public port here and stays one process; run more of it behind a load "
            "balancer (a Kubernetes Deployment: deploy/kubernetes).")
    if not postgres:
        raise MicroshopError(
            f"{service} keeps its data in a SQLite file, which one process writes at a time: start the system "
            "with `microshop up --postgres` to run replicas of it.")


MAX_WORKERS = 8


def check_monolith(monolith: bool, workers: int, *, postgres: bool, replicas: dict[str, int],
                   chaos_proxies: bool) -> None:
    """Raise, saying why, unless the monolith may run this way."""
    if not monolith:
        if workers != 1:
            raise MicroshopError("--workers is for the monolith: `microshop up --monolith --workers N`")
        return
    if any(count > 1 for count in replicas.values()):
        raise MicroshopError("the monolith scales as a whole: `--workers N` (with --postgres), not --replicas")
    if chaos_proxies:
        raise MicroshopError("--chaos-proxies sits between processes; in the monolith the services call each "
                             "other in-process: use the microservices (`microshop up --chaos-proxies`)")
    if not 1 <= workers <= MAX_WORKERS:
        raise MicroshopError(f"--workers must be between 1 and {MAX_WORKERS}, not {workers}")
    if workers > 1 and not postgres:
        raise MicroshopError("several monolith workers share every database, and a SQLite file has one writer at a "
                             "time: start it with `microshop up --monolith --workers N --postgres`")
