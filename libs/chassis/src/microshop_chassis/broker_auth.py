"""Who may do what on the broker: one NATS user per service, limited to its own subjects.

The launcher (and the test fixture ``testing.NatsServer``) writes these users into the
nats-server configuration; nothing connects without a user and a password. A service may publish
only the event types it is the source of (``EventType.source``) and core-subscribe only to the
ones it consumes; the JetStream API it gets is what its relay or consumers call, never stream
deletion, purge or update. The ``operator`` user (the launcher's tools and test harnesses) may do
everything.

What stays open (a known limit, see docs/security.md): a consuming service creates consumers by
JetStream API call, and nats-server cannot check a consumer's filter subjects in the permission
of that call, so notifications or reports could read any event through a consumer of their own.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from urllib.parse import quote

from .contracts import EventType
from .discovery import ANNOUNCE_PREFIX, HELLO, announce_subject
from .events import DEAD_LETTER_PREFIX, DEAD_LETTER_STREAM, STREAM, subject_for
from .services import SERVICES

OPERATOR = "operator"
# What the nodes of a NATS cluster present to each other on their route ports (not a client user).
ROUTE_USER = "route"

# The event types each consuming service reads, and the durable consumer it dead-letters under
# (``deadletter.<durable>``). Checked against the services' own consumers by their tests
# (tests/architecture/test_broker_permissions.py).
CONSUMES: dict[str, tuple[EventType, ...]] = {
    "notifications": (EventType.USER_REGISTERED, EventType.ORDER_CONFIRMED, EventType.ORDER_REJECTED,
                      EventType.ORDER_CANCELLED),
    "reports": (EventType.ORDER_PLACED, EventType.ORDER_CONFIRMED, EventType.ORDER_REJECTED,
                EventType.ORDER_CANCELLED, EventType.PAYMENT_CAPTURED, EventType.PAYMENT_REFUNDED),
}
DURABLES: dict[str, str] = {"notifications": "notifications", "reports": "reports"}

# Every client: replies to its requests (publish acknowledgements, API answers, fetched messages)
# come back on its own inbox.
_INBOX = "_INBOX.>"
# What every JetStream user calls: look up and create the two streams (every process ensures them).
_STREAM_SETUP = tuple(f"$JS.API.STREAM.{verb}.{stream}" for stream in (STREAM, DEAD_LETTER_STREAM)
                      for verb in ("INFO", "CREATE"))
# A consumer's own calls: create, look up, fetch from, delete (reports' replay uses ephemeral
# consumers with server-chosen names, so the consumer name cannot be pinned), and acknowledge.
_CONSUMING = (f"$JS.API.CONSUMER.*.{STREAM}", f"$JS.API.CONSUMER.*.{STREAM}.>",
              f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.>", f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.>",
              f"$JS.ACK.{STREAM}.>")


# Every service hears the replicas of the others announce themselves, and answers a newcomer's hello.
_DIRECTORY_HEARD = (f"{ANNOUNCE_PREFIX}.>", HELLO)


@dataclass(frozen=True)
class BrokerUser:
    name: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def config(self, password: str) -> dict:
        return {"user": self.name, "password": password,
                "permissions": {"publish": {"allow": list(self.publish)},
                                "subscribe": {"allow": list(self.subscribe)}}}


def emits(service: str) -> tuple[EventType, ...]:
    return tuple(event_type for event_type in EventType if event_type.source == service)


def service_user(service: str) -> BrokerUser:
    """Its own event subjects to publish, its consumed ones to subscribe, and the JetStream calls
    its relay (publish + acknowledgement) and consumers need."""
    publish = [subject_for(service, event_type.value) for event_type in emits(service)]
    subscribe = [_INBOX, *_DIRECTORY_HEARD]
    consumed = CONSUMES.get(service, ())
    if publish or consumed:
        publish += _STREAM_SETUP
    if consumed:
        publish += [*_CONSUMING, f"{DEAD_LETTER_PREFIX}.{DURABLES[service]}"]
        subscribe += [subject_for(event_type.source, event_type.value) for event_type in consumed]
    # Announce itself under its own name only: no service can draw another's calls (discovery.py).
    publish += [announce_subject(service), HELLO]
    return BrokerUser(service, tuple(publish), tuple(subscribe))


def operator_user() -> BrokerUser:
    return BrokerUser(OPERATOR, (">",), (">",))


def broker_users() -> list[BrokerUser]:
    """One user per service of the list, and the operator."""
    return [*(service_user(spec.name) for spec in SERVICES), operator_user()]


@dataclass(frozen=True)
class ClusterNode:
    """One node of a NATS cluster whose nodes all listen on ``host``: its name (JetStream
    clustering needs one per node), its route port and its peers' route ports."""

    server_name: str
    host: str
    route_port: int
    peer_route_ports: tuple[int, ...]
    cluster_name: str = "microshop"

    def config(self, route_password: str) -> dict:
        # A route is trusted with everything (every message with interest flows over it, and what
        # it sends bypasses the users' permissions), and loopback is shared with every local
        # account: so a route must authenticate, like a client. Its password lives with the users'.
        credentials = f"{ROUTE_USER}:{route_password}@"
        return {"name": self.cluster_name, "listen": f"{self.host}:{self.route_port}",
                "authorization": {"user": ROUTE_USER, "password": route_password},
                "routes": [f"nats-route://{credentials}{self.host}:{port}" for port in self.peer_route_ports]}


def server_config(passwords: dict[str, str], *, sync_every_write: bool = True,
                  node: ClusterNode | None = None) -> str:
    """The nats-server configuration: its ``authorization`` block for these users' passwords (no
    ``no_auth_user`` and no system account user: a connection without credentials is refused) and
    JetStream's durability.

    ``sync_every_write``: JetStream acknowledges a publish once the message is in its file, and
    by default fsyncs files only every two minutes (``sync_interval``), so a power loss or kernel
    crash can lose acknowledged messages (Jepsen's 2025 analysis of NATS 2.12 lost 14% of them in
    a coordinated power cut). The outbox deletes an event once it is acknowledged: the broker's
    copy is then the only one, so it must be on disk first (docs/performance.md has the cost).

    ``node``: this server is one node of a cluster (``server_name`` and a ``cluster`` block whose
    routes authenticate as ``ROUTE_USER``)."""
    users = [user.config(passwords[user.name]) for user in broker_users()]
    # nats-server's configuration format reads JSON; quoted strings keep `$JS...` literal.
    jetstream = {"sync_interval": "always"} if sync_every_write else {}
    text = ("jetstream: " + json.dumps(jetstream) + "\n"
            + "authorization: " + json.dumps({"users": users}, indent=2) + "\n")
    if node is not None:
        text += (f"server_name: {json.dumps(node.server_name)}\n"
                 + "cluster: " + json.dumps(node.config(passwords[ROUTE_USER]), indent=2) + "\n")
    return text


def new_passwords(existing: dict[str, str] | None = None) -> dict[str, str]:
    """A random password for every broker user, and for the cluster routes, that has none in
    ``existing`` (kept as they are)."""
    passwords = dict(existing or {})
    for name in (*(user.name for user in broker_users()), ROUTE_USER):
        passwords.setdefault(name, secrets.token_hex(24))  # hex: safe in a URL and the config
    return passwords


def url_with_credentials(url: str, user: str, password: str) -> str:
    """``nats://host:port`` -> ``nats://user:password@host:port`` (for tools and tests; a service
    gets its user and password as settings instead)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}"
