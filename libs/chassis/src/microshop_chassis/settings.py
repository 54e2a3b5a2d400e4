"""Settings shared by every service, read from the environment.

Shared values use the ``MICROSHOP_`` prefix (``MICROSHOP_NATS_URL``). Values that belong to one
service use that service's prefix (``MICROSHOP_ORDERS_PORT``, ``MICROSHOP_ORDERS_DATABASE_URL``),
so one environment can describe the whole system and each process picks out its own part.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from .services import routed


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
    # Requests in progress beyond which new ones get 503 + Retry-After at once (load shedding).
    max_in_flight: int = 512

    data_dir: Path = shared(Path(".microshop"), "DATA_DIR")
    nats_url: str = shared("nats://127.0.0.1:14222", "NATS_URL")
    log_level: str = shared("INFO", "LOG_LEVEL")
    log_format: str = shared("json", "LOG_FORMAT")
    # Secret a service presents to users to obtain a service token (client-credentials style).
    service_secret: str = shared("local-dev-service-secret", "SERVICE_SECRET")
    # Default deadline for one call to another service, in seconds.
    http_timeout: float = shared(5.0, "HTTP_TIMEOUT")
    # OpenTelemetry: where spans go. "none" keeps propagation on and exports nothing;
    # "console" prints spans; "file" writes JSON lines to <data_dir>/traces/<service>.jsonl.
    traces_exporter: str = shared("none", "TRACES_EXPORTER")

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{self.service_name}.db').resolve()}"


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
