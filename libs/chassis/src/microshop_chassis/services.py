"""The one list of microshop's services. The launcher, the gateway, the architecture tests and the
Makefile (CI) read it; adding a service is its folder ``services/<name>/`` plus one entry here
(docs/ARCHITECTURE.md has the steps).

Plain data and the standard library only: ``python3 libs/chassis/src/microshop_chassis/services.py
folders`` prints the service folders before anything is installed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

Storage = Literal["sql", "duckdb", "none"]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    # Where the launcher starts it (MICROSHOP_<NAME>_PORT overrides).
    port: int
    # Its data: "sql" (SQLite by default, PostgreSQL by URL; Alembic migrations), "duckdb" (a file
    # one process writes), "none".
    storage: Storage
    # Behind the gateway at /api/<name>/...: "" maps that to the service's own /..., "/orders" to
    # its /orders/... (a service whose public API is one collection). None: not behind the gateway.
    gateway_prefix: str | None
    # Runs an outbox relay or event consumers, so GET /admin/messaging has something to say.
    messaging: bool

    @property
    def package(self) -> str:
        return f"microshop_{self.name}"

    @property
    def folder(self) -> str:
        return f"services/{self.name}"

    @property
    def env_prefix(self) -> str:
        return f"MICROSHOP_{self.name.upper()}_"


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("users", 8101, "sql", gateway_prefix="", messaging=True),
    ServiceSpec("inventory", 8102, "sql", gateway_prefix="", messaging=False),
    ServiceSpec("orders", 8103, "sql", gateway_prefix="/orders", messaging=True),
    ServiceSpec("payments", 8104, "sql", gateway_prefix="/payments", messaging=True),
    ServiceSpec("notifications", 8105, "sql", gateway_prefix="/notifications", messaging=True),
    ServiceSpec("reports", 8106, "duckdb", gateway_prefix="", messaging=True),
    ServiceSpec("gateway", 8080, "none", gateway_prefix=None, messaging=False),
    # The shop in a browser: a backend for frontend that calls the gateway's public API only.
    ServiceSpec("storefront", 8000, "none", gateway_prefix=None, messaging=False),
)


def service(name: str) -> ServiceSpec:
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise KeyError(f"no service named {name!r}")


def routed() -> tuple[ServiceSpec, ...]:
    """The services behind the gateway, which every process gets a MICROSHOP_<NAME>_URL for."""
    return tuple(spec for spec in SERVICES if spec.gateway_prefix is not None)


def names(*, storage: Storage | None = None) -> tuple[str, ...]:
    return tuple(spec.name for spec in SERVICES if storage is None or spec.storage == storage)


def importlinter_config() -> str:
    """The import contracts `make lint` checks: services never import each other, and the chassis,
    the launcher and the simulators import no service."""
    def lines(packages) -> str:
        return "".join(f"    {package}\n" for package in packages)

    services = lines(spec.package for spec in SERVICES)
    platform, simulators = lines(_PLATFORM), lines(_STANDALONE)
    return (
        "# Generated from microshop_chassis/services.py by `make lint`.\n"
        "[importlinter]\nroot_packages =\n" + services + platform + simulators
        + "\n[importlinter:contract:services-independent]\nname = Services never import each other\n"
        "type = independence\nmodules =\n" + services
        + "\n[importlinter:contract:chassis-below-services]\n"
        "name = The chassis, the launcher and the simulators import no service\n"
        "type = forbidden\nsource_modules =\n" + platform + simulators + "forbidden_modules =\n" + services
        + "\n[importlinter:contract:simulators-standalone]\n"
        "name = Outside-system simulators use no microshop code at all\n"
        "type = forbidden\nsource_modules =\n" + simulators
        + "forbidden_modules =\n    microshop_chassis\n    microshop_cli\n"
    )


# The packages that are not services: the chassis, the launcher and its telemetry receiver, and the outside-system
# simulators and the fault-injection proxy, which use no microshop code at all.
_PLATFORM = ("microshop_chassis", "microshop_cli", "microshop_telemetry")
_STANDALONE = ("microshop_card_processor", "microshop_mail_catcher", "microshop_chaos_proxy")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "names"
    if what == "folders":
        print(" ".join(spec.folder for spec in SERVICES))
    elif what == "importlinter":
        print(importlinter_config(), end="")
    else:
        print(" ".join(names()))
