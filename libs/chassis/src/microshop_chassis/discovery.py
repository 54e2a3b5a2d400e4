"""Where the replicas of each service are: announced on the broker, heard by every caller.

Every replica announces itself once a second on ``directory.announce.<service>`` (plain NATS
publish, no JetStream): its instance name, URL, release and state, ``ready`` or ``draining``.
Every process keeps a ``Directory`` of what it hears and forgets a replica three heartbeats after
its last announcement, or at once when it says ``draining`` or ``gone``. A process that starts asks
on ``directory.hello`` and every replica answers straight away, so a new caller knows the live
replicas within a round trip, and a new replica is known to every caller before its ``/ready``
says 200 (it answers 503 until its first announcement went out).

Why this and not a registry with state (a JetStream key-value bucket, Consul): nothing to store,
to expire or to clean up after a crash; a replica's presence is its heartbeat, and the broker
every service already uses carries it. While this process is cut off from the broker it hears
nothing, so it keeps its last view instead of forgetting every replica (calls still fail over
from a dead one, see ``Replicas.failed``); with no replica known at all, a client uses the
service's configured URL (``MICROSHOP_<NAME>_URL``): the first replica locally, the one Service
URL in Kubernetes, where ``MICROSHOP_DISCOVERY=false`` leaves the spreading to the platform.

A service may announce under its own name only (its broker user may publish nothing else, see
broker_auth), so one service cannot draw another's traffic.

Choosing among replicas: the one with fewer calls in flight of two picked at random ("power of
two choices", the least-request balancing of Envoy and Finagle): as even as round robin when the
replicas are alike, and it steers around one that is slow.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

import structlog

log = structlog.get_logger("microshop.discovery")

ANNOUNCE_PREFIX = "directory.announce"
HELLO = "directory.hello"
READY, DRAINING, GONE = "ready", "draining", "gone"
# A replica not heard from for this many heartbeats is taken for dead.
MISSED_HEARTBEATS = 3
# A replica a call could not reach is not chosen again for this long (unless it is the only one).
EJECT_SECONDS = 5.0


def announce_subject(service: str) -> str:
    return f"{ANNOUNCE_PREFIX}.{service}"


class Endpoints(Protocol):
    """Where a client sends its next call."""

    def pick(self, avoid: Collection[str] = ()) -> str: ...

    def started(self, url: str) -> None: ...

    def finished(self, url: str, *, reached: bool) -> None: ...

    def alternatives(self, avoid: Collection[str]) -> bool: ...


class FixedEndpoint:
    """One address (an outside system, or a service behind a platform's load balancer)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def pick(self, avoid: Collection[str] = ()) -> str:
        return self.url

    def started(self, url: str) -> None:
        pass

    def finished(self, url: str, *, reached: bool) -> None:
        pass

    def alternatives(self, avoid: Collection[str]) -> bool:
        return False


def as_endpoints(target: str | Endpoints) -> Endpoints:
    return FixedEndpoint(target) if isinstance(target, str) else target


@dataclass
class Instance:
    name: str
    url: str
    release: str
    state: str
    heard: float  # time.monotonic() of the last announcement


@dataclass
class Replicas:
    """The live replicas of one service as this process knows them, and its calls in flight to
    each. ``fallback``: the configured URL, used while no replica is known."""

    service: str
    fallback: str
    expire_after: float
    instances: dict[str, Instance] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    ejected: dict[str, float] = field(default_factory=dict)  # url -> until (monotonic)
    # Whether the directory may expire silent replicas now (it hears the broker).
    listening: Callable[[], bool] = lambda: True

    def live(self) -> list[Instance]:
        if self.listening():
            now = time.monotonic()
            for name in [n for n, i in self.instances.items() if now - i.heard > self.expire_after]:
                log.info("replica_expired", service=self.service, instance=name)
                del self.instances[name]
        return [instance for instance in self.instances.values() if instance.state == READY]

    def urls(self) -> list[str]:
        return [instance.url for instance in self.live()]

    def pick(self, avoid: Collection[str] = ()) -> str:
        now = time.monotonic()
        urls = self.urls()
        usable = [url for url in urls if url not in avoid and self.ejected.get(url, 0.0) <= now]
        if not usable:  # all avoided or ejected: any live one beats none; none known: the fallback
            usable = [url for url in urls if url not in avoid] or urls or [self.fallback]
        if len(usable) == 1:
            return usable[0]
        first, second = random.sample(usable, 2)
        return first if self.in_flight.get(first, 0) <= self.in_flight.get(second, 0) else second

    def alternatives(self, avoid: Collection[str]) -> bool:
        """Whether a replica other than those in ``avoid`` is live."""
        return any(url not in avoid for url in self.urls())

    def started(self, url: str) -> None:
        self.in_flight[url] = self.in_flight.get(url, 0) + 1

    def finished(self, url: str, *, reached: bool) -> None:
        """``reached=False``: the replica could not be reached (refused, reset, dead): choose
        another until it has had time to come back."""
        self.in_flight[url] = max(0, self.in_flight.get(url, 1) - 1)
        if not reached:
            self.ejected[url] = time.monotonic() + EJECT_SECONDS

    def heard(self, instance: Instance) -> None:
        if instance.state == GONE:
            self.instances.pop(instance.name, None)
            return
        known = self.instances.get(instance.name)
        if known is None or known.url != instance.url or known.state != instance.state:
            log.info("replica_" + ("seen" if instance.state == READY else instance.state), service=self.service,
                     instance=instance.name, url=instance.url, release=instance.release)
            if instance.state == READY:
                self.ejected.pop(instance.url, None)  # a replica restarted on the same address
        self.instances[instance.name] = instance


class Connection(Protocol):
    """What the directory needs of the broker connection (``broker.Broker``)."""

    ready: asyncio.Event

    @property
    def nc(self): ...


class Directory:
    """This process's view of every service's replicas, and its own announcements."""

    def __init__(self, connection: Connection, *, heartbeat: float = 1.0) -> None:
        self.connection = connection
        self.heartbeat = heartbeat
        self._replicas: dict[str, Replicas] = {}
        self._subscription = None
        self._heard_since: float | None = None  # monotonic time the current connection began hearing
        self._task: asyncio.Task | None = None
        self._me: _Me | None = None

    def replicas(self, service: str, fallback: str) -> Replicas:
        """The replicas of ``service`` (one object per service, shared by every client of it)."""
        replicas = self._replicas.get(service)
        if replicas is None:
            replicas = self._replicas[service] = Replicas(
                service, fallback.rstrip("/"), expire_after=MISSED_HEARTBEATS * self.heartbeat,
                listening=self._listening)
        return replicas

    def announce_as(self, service: str, instance: str, url: str, release: str,
                    ready: Callable[[], Awaitable[bool]]) -> None:
        """Announce this process as a replica of ``service`` while ``ready()`` says so."""
        self._me = _Me(service, instance, url.rstrip("/"), release, ready)

    @property
    def announced(self) -> bool:
        """Whether this replica's announcement as ready has gone out (``/ready`` waits for it)."""
        return self._me is not None and self._me.announced

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        await self.connection.ready.wait()
        nc = self.connection.nc
        # A core subscription: nats-py makes it again after a reconnect by itself.
        self._subscription = await nc.subscribe(ANNOUNCE_PREFIX + ".>", cb=self._on_announcement)
        if self._me is not None:
            await nc.subscribe(HELLO, cb=self._on_hello)
        await nc.publish(HELLO, b"")
        while True:
            if self._me is not None:
                await self._announce()
            await asyncio.sleep(self.heartbeat)

    def _listening(self) -> bool:
        nc = self.connection.nc
        if nc is None or not nc.is_connected:
            self._heard_since = None
            return False
        if self._heard_since is None:
            self._heard_since = time.monotonic()
        # Just (re)connected: every live replica has had less than a full expiry to be heard again.
        return time.monotonic() - self._heard_since >= MISSED_HEARTBEATS * self.heartbeat

    async def _on_announcement(self, msg) -> None:
        try:
            body = json.loads(msg.data)
            service = msg.subject.removeprefix(ANNOUNCE_PREFIX + ".")
            instance = Instance(str(body["instance"]), str(body["url"]).rstrip("/"), str(body.get("release", "")),
                                str(body["state"]), time.monotonic())
        except (ValueError, KeyError, TypeError):
            log.warning("bad_announcement", subject=msg.subject)
            return
        if service in self._replicas:
            self._replicas[service].heard(instance)

    async def _on_hello(self, _msg) -> None:
        await self._announce()

    async def _announce(self, state: str | None = None) -> None:
        me, nc = self._me, self.connection.nc
        if me is None or nc is None or not nc.is_connected:
            return
        if state is None:
            if me.state != READY and me.state is not None:  # draining or gone: never ready again
                return
            try:
                state = READY if await me.ready() else None
            except Exception:
                state = None
            if state is None:
                return  # not ready yet (or any more): nothing to announce, callers pick others
        me.state = state
        body = {"instance": me.instance, "url": me.url, "release": me.release, "state": state}
        try:
            await nc.publish(announce_subject(me.service), json.dumps(body).encode())
            await nc.flush(timeout=1)
        except Exception as exc:  # the broker went away: the next heartbeat tries again
            log.debug("announce_failed", error=repr(exc))
            return
        if state == READY:
            me.announced = True

    async def draining(self) -> None:
        """At the start of a graceful stop: callers stop choosing this replica at once."""
        await self._announce(DRAINING)

    async def stop(self) -> None:
        if self._me is not None and self._me.state is not None:
            await self._announce(GONE)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._subscription is not None:
            try:
                await self._subscription.unsubscribe()
            except Exception:  # the connection may be closed already
                pass


@dataclass
class _Me:
    service: str
    instance: str
    url: str
    release: str
    ready: Callable[[], Awaitable[bool]]
    state: str | None = None
    announced: bool = False
