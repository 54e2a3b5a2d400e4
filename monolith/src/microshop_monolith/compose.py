"""The monolith's composition root: every service built by its own bootstrap, from its own
settings (the environment the launcher gives every process, each service reading its own
``MICROSHOP_<SERVICE>_*`` part), and put side by side in one ``HostGroup`` behind the gateway.

What stays separate, as between processes: each module's database (its own SQLite file, or its
own PostgreSQL database and role), its outbox and inbox, its broker user and its consumers (events
still go through NATS), its token checks, metrics registry and tracer. What the process shares:
one event loop, one interpreter's imports and memory, and the one public port. Calls between
modules go through the same chassis clients as between services, answered in-process
(microshop_chassis.in_process) rather than over a socket.

This package is the one place that imports every service: a composition root, not a service.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from microshop_gateway import bootstrap as gateway
from microshop_gateway.settings import GatewaySettings
from microshop_inventory import bootstrap as inventory
from microshop_inventory.settings import InventorySettings
from microshop_notifications import bootstrap as notifications
from microshop_notifications.settings import NotificationsSettings
from microshop_orders import bootstrap as orders
from microshop_orders.settings import OrdersSettings
from microshop_payments import bootstrap as payments
from microshop_payments.settings import PaymentsSettings
from microshop_reports import bootstrap as reports
from microshop_reports.settings import ReportsSettings
from microshop_users import bootstrap as users
from microshop_users.settings import UsersSettings

from microshop_chassis.host_group import HostGroup

# In start order: users first (everyone's tokens), then what orders calls, then orders, then the
# event consumers. The gateway, the one public part, starts last and stops first.
MODULES = (
    (users, UsersSettings),
    (inventory, InventorySettings),
    (payments, PaymentsSettings),
    (orders, OrdersSettings),
    (notifications, NotificationsSettings),
    (reports, ReportsSettings),
)


def build(env: Mapping[str, str] | None = None) -> HostGroup:
    """``MICROSHOP_MONOLITH_MODULES`` (comma-separated, default all) names the services run here;
    calls to any other go to its URL over HTTP, as between microservices."""
    env = os.environ if env is None else env
    chosen = {name.strip() for name in env.get("MICROSHOP_MONOLITH_MODULES", "").split(",") if name.strip()}
    inner = [module.build(settings_class(**_own(settings_class, env))) for module, settings_class in MODULES
             if not chosen or _name(settings_class) in chosen]
    public = gateway.build(GatewaySettings(**_own(GatewaySettings, env)))
    return HostGroup(public, inner)


def _name(settings_class) -> str:
    return settings_class.model_fields["service_name"].default


def _own(settings_class, env: Mapping[str, str]) -> dict[str, object]:
    """What differs per module in one process: no discovery (the modules are here, not announced),
    and the module's own broker user (MICROSHOP_<SERVICE>_NATS_USER / _NATS_PASSWORD) where the
    launcher gives one."""
    name = _name(settings_class)
    prefix = f"MICROSHOP_{name.upper()}_"
    own: dict[str, object] = {"discovery": False}
    if env.get(prefix + "NATS_USER"):
        own.update(nats_user=env[prefix + "NATS_USER"], nats_password=env.get(prefix + "NATS_PASSWORD", ""))
    return own


def workers(env: Mapping[str, str] | None = None) -> int:
    """Processes serving the one port (``MICROSHOP_MONOLITH_WORKERS``; more than one needs
    PostgreSQL: SQLite has one writer per file)."""
    env = os.environ if env is None else env
    return max(1, int(env.get("MICROSHOP_MONOLITH_WORKERS", "1")))
