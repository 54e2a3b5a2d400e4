from __future__ import annotations

from dataclasses import dataclass

from pydantic_settings import SettingsConfigDict

from microshop_chassis.services import routed
from microshop_chassis.settings import ServiceSettings

# The services behind the gateway (microshop_chassis.services); each one's base URL is the chassis
# setting ``<name>_url``. A service whose public API is one collection named after it has that as
# its gateway prefix: /api/orders is the orders service's /orders (and /api/orders/7/cancel its
# /orders/7/cancel); the others map /api/<name>/x to their /x. Whatever lies outside the prefix
# (payments' /charges, for instance, which only orders may call) is not reachable through the
# gateway at all.
SERVICES = tuple(spec.name for spec in routed())


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MICROSHOP_GATEWAY_", extra="ignore", populate_by_name=True)

    service_name: str = "gateway"
    port: int = 8080
    # Deadline of one proxied call, from connecting to the last byte of the reply, in seconds.
    upstream_timeout: float = 30.0
    # Deadline of each service's /health probe when /health reports on the whole system.
    health_timeout: float = 1.0

    def upstreams(self) -> dict[str, Upstream]:
        return {
            spec.name: Upstream(spec.name, getattr(self, f"{spec.name}_url").rstrip("/"), spec.gateway_prefix or "")
            for spec in routed()
        }


@dataclass(frozen=True)
class Upstream:
    """Where /api/<name>/... goes: ``base_url`` + ``resource_prefix`` + the rest of the path."""

    name: str
    base_url: str
    resource_prefix: str

    @property
    def public_prefix(self) -> str:
        return f"/api/{self.name}"

    @property
    def forwarded_prefix(self) -> str:
        """What to put before one of the service's own paths to make it public: ``/api`` for
        orders (``/orders/7`` -> ``/api/orders/7``), ``/api/users`` for users."""
        return self.public_prefix.removesuffix(self.resource_prefix)
