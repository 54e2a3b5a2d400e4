"""The service host: a service declares its parts, the chassis owns everything around them.

A service's bootstrap builds a ``ServiceHost`` from its settings and declares, in start order,
what it is made of: its database (and migrations), the broker, an outbox relay, event consumers,
background workers, clients of other services, the collaborators its routes need, its routers.
The host then owns the lifecycle: parts start in the order declared and stop in reverse, every
task awaited, a stop being a drain first (``begin_drain``); readiness is composed from the parts;
``/admin/messaging`` reports the relay and consumers it holds; ``/health`` the breakers of the
clients it holds; its HTTP session, metrics registry and tracer provider belong to this one
service, so several can live in one process.

    host = ServiceHost(settings, version=__version__, description="...")
    db = host.database("microshop_payments:migrations")
    broker = host.broker()
    host.outbox_relay(db, broker)
    host.provide(Payments, Payments(db, CardProcessor(host.client("card-processor", url))))
    host.routes(router, errors=ERRORS)
    serve(host)  # or RunningApp(host.app) in a test
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from fastapi import APIRouter, FastAPI
from opentelemetry import trace

from .app import ReadinessCheck, create_app
from .auth import JwtVerifier, ServiceTokenProvider, http_jwks_loader
from .background import BackgroundWorker
from .broker import Broker
from .consumer import EventConsumer, EventHandler
from .context import service_var
from .discovery import Directory, Endpoints, FixedEndpoint
from .errors import ProblemMap, install_domain_error
from .http_client import HttpSession, ServiceClient
from .messaging import MessagingGauges, MessagingReport
from .metrics import ServiceMetrics
from .provide import ServiceApp, provide
from .services import routed
from .settings import ServiceSettings
from .telemetry import tracer_provider

# The database layer is imported when a service declares a database: one without (the gateway,
# reports) does not carry SQLAlchemy's ~20 MB.
if TYPE_CHECKING:
    from .db import Database
    from .outbox import OutboxRelay

log = structlog.get_logger("microshop.host")

T = TypeVar("T")
W = TypeVar("W", bound=BackgroundWorker)
Action = Callable[[], Awaitable[Any] | Any]


@dataclass(frozen=True)
class _Step:
    name: str
    start: Action | None = None
    stop: Action | None = None
    # At a graceful stop, before ``stop``: finish the work in hand within the seconds given.
    drain: Callable[[float], Awaitable[Any]] | None = None


class ServiceHost:
    def __init__(
        self,
        settings: ServiceSettings,
        *,
        version: str,
        description: str = "",
        verifier: JwtVerifier | None = None,
        verifies_tokens: bool = True,
        operator_metrics: bool = False,
    ) -> None:
        """``verifier`` checks bearer tokens (default: against the JWKS users publishes, fetched on
        first use); ``verifies_tokens=False`` for a service that checks none (the gateway), which
        then has no ``/admin/messaging`` either; ``operator_metrics``: its ``/metrics`` asks for an
        admin or service token (so it verifies those)."""
        self.settings = settings
        self.name = settings.service_name
        self.version = settings.release or version  # a deploy's --version labels the release
        self.instance = settings.instance_name()
        self.metrics = ServiceMetrics(process=True)
        provider = tracer_provider(self.name, settings.traces_exporter, settings.data_dir,
                                   telemetry_url=settings.telemetry_url, instance=settings.instance_name(),
                                   traces_per_second=settings.traces_per_second)
        self.tracer_provider: trace.TracerProvider = provider
        self.http = HttpSession()
        self.messaging = MessagingReport(self.name, self.metrics)
        self._steps: list[_Step] = []
        self._checks: dict[str, ReadinessCheck] = {}
        self._clients: list[ServiceClient] = []
        self._health: list[Callable[[], Awaitable[dict[str, Any]]]] = []
        self._service_tokens: ServiceTokenProvider | None = None
        self._drain_actions: list[Action] = []
        self._drain_tasks: list[asyncio.Task] = []
        self._drain_deadline: float | None = None  # time.monotonic() by which the drain must end
        self._broker: Broker | None = None
        self._messaging_gauges = False
        # The replicas of the services it calls, and its own announcement (discovery.py).
        self.directory: Directory | None = Directory(None) if settings.discovery else None
        self.app: ServiceApp = create_app(
            settings=settings, version=self.version, instance=self.instance, description=description,
            lifespan=self._lifespan,
            readiness=self._checks, draining=lambda: self.draining, health_extra=self._health_extra,
            messaging=self.messaging,
            messaging_admin=verifies_tokens, operator_metrics=operator_metrics, breakers=self._breakers,
            metrics=self.metrics,
            tracer_provider=provider,
        )
        if self.directory is not None:
            self.readiness("announced", self._announced)
            self.on_drain(self.directory.draining, "directory-draining")
        if verifies_tokens or operator_metrics:
            self.provide(JwtVerifier, verifier or JwtVerifier(
                http_jwks_loader(self.endpoints("users", settings.users_url), self.http,
                                 timeout=settings.http_timeout)))

    # --- parts, in start order ------------------------------------------------------------------

    def database(self, migrations: str | None = None, *, url: str | None = None) -> Database:
        """The service's database; migrated to the newest revision of ``migrations`` at start."""
        from .db import Database

        db = Database(url or self.settings.resolved_database_url(), pool_size=self.settings.database_pool_size,
                      tracer_provider=self.tracer_provider, database_spans=self.settings.database_spans)
        self._steps.append(_Step("database", (lambda: db.migrate(migrations)) if migrations else None,
                                 db.dispose))
        self.readiness("database", db.ping)
        return db

    def broker(self) -> Broker:
        broker = Broker(self.settings.nats_url, client_name=self.name, user=self.settings.nats_user,
                        password=self.settings.nats_password, stream_replicas=self.settings.nats_stream_replicas)
        self._broker = self._broker or broker
        self._steps.append(_Step("broker", broker.start, broker.close))
        self.readiness("broker", broker.ping)
        return broker

    def outbox_relay(self, db: Database, broker: Broker, **options: Any) -> OutboxRelay:
        from .outbox import OutboxRelay

        relay = OutboxRelay(db, broker, metrics=self.metrics, tracer_provider=self.tracer_provider, **options)
        self.messaging.add_relay(relay)
        self.worker(relay)
        self._refresh_messaging_gauges()
        return relay

    def consumer(self, broker: Broker, *, durable: str, subjects: list[str], handler: EventHandler,
                 **options: Any) -> EventConsumer:
        consumer = EventConsumer(broker, durable=durable, subjects=subjects, handler=handler,
                                 metrics=self.metrics, tracer_provider=self.tracer_provider, **options)
        self.messaging.add_consumer(consumer)
        self.on_drain(consumer.finish, f"{consumer.name}-fetch")  # no delivery is taken once draining
        self.worker(consumer)
        self._refresh_messaging_gauges()
        return consumer

    def _refresh_messaging_gauges(self) -> None:
        """Once a service has a relay or a consumer: keep its backlog and lag gauges current."""
        if not self._messaging_gauges:
            self._messaging_gauges = True
            self.worker(MessagingGauges(self.messaging))

    def worker(self, worker: W) -> W:
        """A loop that runs while the service runs (started here in order; at stop, in reverse,
        its round in hand finishes within the drain timeout, then it is cancelled)."""
        self._steps.append(_Step(worker.name, worker.start, worker.stop, worker.drain))
        return worker

    def on_start(self, action: Action, name: str = "on-start") -> None:
        self._steps.append(_Step(name, start=action))

    def on_stop(self, action: Action, name: str = "on-stop") -> None:
        """Runs at stop, before whatever was declared earlier is stopped."""
        self._steps.append(_Step(name, stop=action))

    def on_drain(self, action: Action, name: str = "on-drain") -> None:
        """Runs as soon as the drain begins (SIGTERM), while requests in flight still finish: a
        part that takes new work stops taking it (a consumer's fetch; a registration that tells
        callers to pick another replica)."""
        self._drain_actions.append(action)

    def client(self, target: str, base_url: str, *, authenticated: bool = True, **options: Any) -> ServiceClient:
        """A client of another service (``authenticated``: it presents this service's token) or of
        an outside system; its breaker shows in ``/health``."""
        options.setdefault("timeout", self.settings.http_timeout)
        if authenticated:
            tokens = self.service_tokens()
            options.update(token_provider=tokens, token_refresh=tokens.invalidate)
        client = ServiceClient(target, self.endpoints(target, base_url), session=self.http, metrics=self.metrics,
                               tracer_provider=self.tracer_provider, **options)
        self._clients.append(client)
        return client

    def endpoints(self, target: str, url: str) -> Endpoints:
        """Where calls to ``target`` go: its live replicas when it is a service this process can
        discover, else ``url`` as it is (an outside system; a platform's load balancer)."""
        if self.directory is None or target not in _DISCOVERABLE:
            return FixedEndpoint(url)
        return self.directory.replicas(target, url)

    def service_tokens(self) -> ServiceTokenProvider:
        """This service's own token from users, for calls to other services."""
        if self._service_tokens is None:
            self._service_tokens = ServiceTokenProvider(self.endpoints("users", self.settings.users_url), self.name,
                                                        self.settings.service_secret, self.http)
        return self._service_tokens

    # --- what the routes and operators see ------------------------------------------------------

    def provide(self, kind: type[T], instance: T) -> T:
        """Hand ``instance`` to every route declaring ``Annotated[kind, Provide(kind)]``."""
        provide(self.app, kind, instance)
        return instance

    def routes(self, *routers: APIRouter, errors: ProblemMap | None = None) -> None:
        """The service's routers, and its domain errors mapped to problem types (answered as
        problem+json wherever they are raised)."""
        for error_class, problem_type in (errors or {}).items():
            install_domain_error(self.app, error_class, problem_type)
        for router in routers:
            self.app.include_router(router)

    def readiness(self, name: str, check: ReadinessCheck) -> None:
        self._checks[name] = check

    @property
    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        return dict(self._checks)

    def health(self, extra: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        """Adds what ``extra()`` returns to the ``/health`` body."""
        self._health.append(extra)

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._drain_deadline is not None

    def begin_drain(self) -> None:
        """The first half of a graceful stop (SIGTERM; see runner.py): from now on ``/ready``
        answers 503 and the drain actions run (consumers stop fetching). The server then stops
        accepting connections and lets the requests in flight finish; then the parts stop in
        reverse order, each finishing what it holds (the outbox relay publishes what was
        committed). All of it within ``settings.drain_seconds``; whatever is left then is
        cancelled. Safe to call more than once."""
        if self._drain_deadline is not None:
            return
        self._drain_deadline = time.monotonic() + self.settings.drain_seconds
        log.info("drain_started", timeout_seconds=self.settings.drain_seconds)
        for action in self._drain_actions:
            try:
                result = action()
            except Exception:  # one action failing must not keep the drain from going on
                log.exception("drain_action_failed")
                continue
            if inspect.isawaitable(result):
                self._drain_tasks.append(asyncio.ensure_future(result))

    def drain_time_left(self) -> float:
        """Seconds left until the drain must have ended (the whole timeout before it began)."""
        if self._drain_deadline is None:
            return self.settings.drain_seconds
        return max(0.0, self._drain_deadline - time.monotonic())

    @asynccontextmanager
    async def _lifespan(self, _app: FastAPI):
        service_var.set(self.name)  # this task's logs, and every task it starts, name the service
        started: list[_Step] = []
        directory_broker: Broker | None = None
        try:
            for step in self._steps:
                if step.start is not None:
                    await _call(step.start)
                started.append(step)
            if self.directory is not None:
                directory_broker = await self._start_directory()
            yield
        finally:
            began = time.monotonic()
            self.begin_drain()  # a stop without a signal (a test's server, an embedding process)
            await self._finish_drain_actions()
            if self.directory is not None:
                await self.directory.stop()  # "gone": before the broker connection closes
            if directory_broker is not None:
                await directory_broker.close()
            for step in reversed(started):
                if step.drain is not None:
                    try:
                        await step.drain(self.drain_time_left())
                    except Exception:  # the step's stop below still runs
                        log.exception("drain_failed", part=step.name)
                if step.stop is not None:
                    try:
                        await _call(step.stop)
                    except Exception:  # one part failing to stop must not keep the others running
                        log.exception("stop_failed", part=step.name)
            await self.http.close()
            log.info("stopped", parts_seconds=round(time.monotonic() - began, 3))
            self.tracer_provider.shutdown()

    async def _announced(self) -> None:
        if not self.directory.announced:
            raise ConnectionError("not yet announced to the callers (is the broker reachable?)")

    async def _ready_to_announce(self) -> bool:
        """Every readiness check but the announcement itself passes, and no drain has begun."""
        if self.draining:
            return False
        checks = [check for name, check in self._checks.items() if name != "announced"]
        results = await asyncio.gather(*(asyncio.wait_for(check(), 2.0) for check in checks),
                                       return_exceptions=True)
        return not any(isinstance(result, BaseException) for result in results)

    async def _start_directory(self) -> Broker | None:
        """After the parts: hear the others' announcements and announce this replica. A service
        without a broker of its own gets a plain connection for it."""
        own = None
        if self._broker is None:
            own = Broker(self.settings.nats_url, client_name=self.name, user=self.settings.nats_user,
                         password=self.settings.nats_password, streams=False)
            own.start()
        self.directory.connection = self._broker or own
        self.directory.announce_as(self.name, self.instance, self.settings.own_url(), self.version,
                                   self._ready_to_announce)
        self.directory.start()
        return own

    async def _finish_drain_actions(self) -> None:
        tasks, self._drain_tasks = self._drain_tasks, []
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=self.drain_time_left())
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        for task in tasks:
            if task in late or task.cancelled():
                continue
            if task.exception() is not None:
                log.warning("drain_action_failed", error=repr(task.exception()))

    def _breakers(self) -> Iterator:
        return (client.breaker for client in self._clients if client.breaker is not None)

    async def _health_extra(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for extra in self._health:
            body.update(await extra())
        return body


# The services a process may find replicas of: those behind the gateway (services.py).
_DISCOVERABLE = frozenset(spec.name for spec in routed())


async def _call(action: Action) -> None:
    result = action()
    if inspect.isawaitable(result):
        await result
