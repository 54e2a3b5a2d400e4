"""Settings shared by every service, read from the environment.

Shared values use the ``MICROSHOP_`` prefix (``MICROSHOP_NATS_URL``). Values that belong to one
service use that service's prefix (``MICROSHOP_ORDERS_PORT``, ``MICROSHOP_ORDERS_DATABASE_URL``),
so one environment can describe the whole system and each process picks out its own part.

Local mode is a service bound to a loopback address with ``MICROSHOP_ENVIRONMENT`` unset or
``local`` (a developer's machine, what ``microshop up`` runs). There, a missing service secret
is read from ``<data_dir>/secrets/service-secret`` (created 0600 at first use), so every process
started on one data directory agrees. Anywhere else a missing secret stops the service at start.
"""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, create_model, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .private_files import create_private_file, make_private_dir
from .services import routed
from .telemetry import DEFAULT_TRACES_PER_SECOND

LOCAL_ENVIRONMENT = "local"


def shared(default, name: str):
    """A field read from ``MICROSHOP_<NAME>`` whatever the service's own prefix is."""
    return Field(default, validation_alias=AliasChoices(f"MICROSHOP_{name}"))


class _Settings(BaseSettings):

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    service_name: str = "service"
    host: str = "127.0.0.1"
    port: int = 8000
    # Empty means: a SQLite file named after the service in the data directory.
    database_url: str = ""
    # PostgreSQL connections one process holds at most, and as many again in overflow (the launcher
    # lowers it when replicas share a server's max_connections).
    database_pool_size: int = shared(10, "DATABASE_POOL_SIZE")
    # Requests in progress beyond which new ones get 503 + Retry-After at once (load shedding).
    max_in_flight: int = 512
    # Request size limits (limits.py): a larger body gets 413, larger headers 431, before parsing.
    max_body_bytes: int = shared(1024 * 1024, "MAX_BODY_BYTES")
    max_header_bytes: int = shared(16 * 1024, "MAX_HEADER_BYTES")

    data_dir: Path = shared(Path(".microshop"), "DATA_DIR")
    # One server, or the nodes of a cluster comma-separated (the client fails over between them).
    nats_url: str = shared("nats://127.0.0.1:14222", "NATS_URL")
    # Copies of the event streams a NATS cluster keeps (3 with `microshop up --nats-cluster`).
    nats_stream_replicas: int = shared(1, "NATS_STREAM_REPLICAS")
    log_level: str = shared("INFO", "LOG_LEVEL")
    log_format: str = shared("json", "LOG_FORMAT")
    # "local" (or unset) with a loopback host is local mode (see the module docstring).
    environment: str = shared(LOCAL_ENVIRONMENT, "ENVIRONMENT")
    # Secret a service presents to users to obtain a service token (client-credentials style).
    # No default: outside local mode it must be configured.
    service_secret: str = Field("", validation_alias=AliasChoices("MICROSHOP_SERVICE_SECRET"), repr=False)
    # This service's own broker user (the launcher gives each service one; see broker_auth).
    nats_user: str = shared("", "NATS_USER")
    nats_password: str = Field("", validation_alias=AliasChoices("MICROSHOP_NATS_PASSWORD"), repr=False)
    # A graceful stop (SIGTERM) finishes what was accepted within this many seconds (host.py).
    drain_seconds: float = shared(10.0, "DRAIN_SECONDS")
    # Default deadline for one call to another service, in seconds.
    http_timeout: float = shared(5.0, "HTTP_TIMEOUT")
    # A caller's X-Request-Timeout below this is raised to it, in seconds: a client may not make a
    # service's calls to others time out (and count against their circuit breakers) at will.
    min_request_timeout: float = shared(1.0, "MIN_REQUEST_TIMEOUT")
    # This replica's name among its service's replicas (default: <service>-<port>), and the
    # release it runs (default: the package's version): both show in /health and `status`.
    instance: str = shared("", "INSTANCE")
    release: str = shared("", "RELEASE")
    # Where callers reach this replica (default: http://<host>:<port>).
    advertise_url: str = ""
    # Announce this replica and spread calls over the replicas the others announce (discovery.py).
    # The launcher turns it on; off, each service is its one configured URL (a platform's load
    # balancer, one Kubernetes Service per service, or a test's single process).
    discovery: bool = shared(False, "DISCOVERY")
    # OpenTelemetry: where spans go. "none" keeps propagation on and exports nothing;
    # "console" prints spans; "file" writes JSON lines to <data_dir>/traces/<service>.jsonl.
    traces_exporter: str = shared("none", "TRACES_EXPORTER")
    # microshop's own OTLP receiver (the launcher's telemetry component); empty: none. The standard
    # OTEL_EXPORTER_OTLP_* variables name another backend, independently (telemetry.py).
    telemetry_url: str = shared("", "TELEMETRY_URL")
    # At most about this many new traces a second start here (telemetry.RateLimitedSampler): all of
    # them below that rate. OTEL_TRACES_SAMPLER, when set, decides instead.
    traces_per_second: float = Field(DEFAULT_TRACES_PER_SECOND, gt=0,
                                     validation_alias=AliasChoices("MICROSHOP_TRACES_PER_SECOND"))
    # Database spans (db.py): "transaction", one per transaction or session (the default);
    # "statement", one per statement, for a closer look at a higher cost (docs/performance.md);
    # "off", a trace shows the calls but not the database.
    database_spans: Literal["transaction", "statement", "off"] = shared("transaction", "DATABASE_SPANS")

    @property
    def local_mode(self) -> bool:
        return self.environment in ("", LOCAL_ENVIRONMENT) and _is_loopback(self.host)

    @model_validator(mode="after")
    def _require_service_secret(self):
        if not self.service_secret:
            if not self.local_mode:
                raise ValueError(
                    f"MICROSHOP_SERVICE_SECRET is not set: outside local mode (environment "
                    f"{self.environment!r}, host {self.host!r}) a service needs a configured secret"
                )
            self.service_secret = local_service_secret(self.data_dir)
        return self

    def instance_name(self) -> str:
        return self.instance or f"{self.service_name}-{self.port}"

    def own_url(self) -> str:
        return (self.advertise_url or f"http://{self.host}:{self.port}").rstrip("/")

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        make_private_dir(self.data_dir)
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{self.service_name}.db').resolve()}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: not provably local
        return False


def local_service_secret(data_dir: Path) -> str:
    """The data directory's service secret, created 0600 at first use; of several processes
    starting together the first one's secret is everyone's."""
    path = make_private_dir(data_dir / "secrets") / "service-secret"
    if not path.exists():
        create_private_file(path, secrets.token_urlsafe(32))
    return path.read_text().strip()


# Plus the base URL of every service behind the gateway (services.py), the field ``<name>_url``
# read from ``MICROSHOP_<NAME>_URL``: where the HTTP clients, the JWKS fetch and the gateway go.
ServiceSettings = create_model(
    "ServiceSettings",
    __base__=_Settings,
    __module__=__name__,
    __doc__="Base settings. A service subclasses it and sets ``env_prefix`` to ``MICROSHOP_<SERVICE>_``.",
    **{f"{spec.name}_url": (str, shared(f"http://127.0.0.1:{spec.port}", f"{spec.name.upper()}_URL"))
       for spec in routed()},
)
