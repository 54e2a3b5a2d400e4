"""reports' composition root: its parts, declared in start order and handed to the chassis host."""

from __future__ import annotations

from microshop_chassis.auth import JwtVerifier
from microshop_chassis.host import ServiceHost

from . import __version__
from .api import ERRORS, router
from .replay import StreamReader
from .service import CONSUMED_SUBJECTS, Projection, Reports, StartupReplay
from .settings import ReportsSettings
from .store import ReportStore

DESCRIPTION = ("Sales figures from order and payment events, in DuckDB. Consumes Order* and "
               "Payment{Captured,Refunded}; publishes nothing.")


def build(settings: ReportsSettings | None = None, *, verifier: JwtVerifier | None = None) -> ServiceHost:
    settings = settings or ReportsSettings()
    host = ServiceHost(settings, version=__version__, description=DESCRIPTION, verifier=verifier)
    store = ReportStore(settings.resolved_duckdb_path(), memory_limit=settings.duckdb_memory_limit)
    host.on_stop(store.close, "duckdb")  # declared first: closed once everything below has stopped
    host.readiness("duckdb", store.ping)
    broker = host.broker()
    projection = Projection(store)
    consumer = host.consumer(broker, durable="reports", subjects=CONSUMED_SUBJECTS, handler=projection.apply,
                             batch_handler=projection.apply_batch,
                             batch_linger=settings.batch_linger_seconds, batch_size=settings.batch_size)
    reports = host.provide(Reports, Reports(store, StreamReader(broker), consumer,
                                            replay_batch_size=settings.replay_batch_size))
    # Opens the model, holding the consumer (started just above) until then, or until the replay.
    host.on_start(reports.open, "duckdb")
    host.worker(StartupReplay(reports))
    host.routes(router, errors=ERRORS)
    return host
