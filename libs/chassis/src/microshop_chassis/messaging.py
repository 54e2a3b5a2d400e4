"""What a service's messaging is doing: its outbox relay and event consumers, their backlog and
lag, and the events its consumers dead-lettered. Served at ``GET /admin/messaging``.

The service host hands its relay and consumers to a ``MessagingReport``; the report speaks of
those that are running (started and not stopped). Everything comes from the service's own
outbox table and from JetStream, so an operator (or ``microshop verify``) checks that events
drained without touching any database.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nats.js.errors import NotFoundError
from pydantic import BaseModel, Field

from .background import BackgroundWorker
from .errors import MESSAGING_UNAVAILABLE, Problem
from .events import DEAD_LETTER_PREFIX, DEAD_LETTER_STREAM, STREAM
from .metrics import ServiceMetrics

if TYPE_CHECKING:
    from .broker import Broker
    from .consumer import EventConsumer
    from .outbox import OutboxRelay


class OutboxStatus(BaseModel):
    backlog: int = Field(description="Events in the outbox table, not yet published.")
    oldest_age_seconds: float | None = Field(description="Age of the oldest of them; null when none.")


class ConsumerStatus(BaseModel):
    """JetStream's view of one durable consumer. The numbers are null while the durable does not
    exist on the broker yet (the consumer has not subscribed): its lag is unknown then."""

    durable: str
    subjects: list[str]
    num_pending: int | None = Field(description="Matching messages not yet delivered.")
    num_ack_pending: int | None = Field(description="Delivered, neither acked nor terminated yet.")
    num_redelivered: int | None
    delivered_stream_seq: int | None
    ack_floor_stream_seq: int | None


class MessagingStatus(BaseModel):
    service: str
    outbox: OutboxStatus | None = Field(description="Null when this service has no outbox relay.")
    consumers: list[ConsumerStatus]
    dead_letters: dict[str, int] = Field(
        description=f"Per consumer durable: messages on {DEAD_LETTER_PREFIX}.<durable> in {DEAD_LETTER_STREAM}."
    )


class MessagingReport:
    def __init__(self, service: str, metrics: ServiceMetrics | None = None) -> None:
        self.service = service
        self.metrics = metrics or ServiceMetrics()
        self._relays: list[OutboxRelay] = []
        self._consumers: list[EventConsumer] = []

    def add_relay(self, relay: OutboxRelay) -> OutboxRelay:
        self._relays.append(relay)
        return relay

    def add_consumer(self, consumer: EventConsumer) -> EventConsumer:
        self._consumers.append(consumer)
        return consumer

    def running_relays(self) -> list[OutboxRelay]:
        return [relay for relay in self._relays if relay.started]

    def running_consumers(self) -> list[EventConsumer]:
        """The running consumers, by durable name."""
        return sorted((c for c in self._consumers if c.started), key=lambda consumer: consumer.durable)

    async def status(self, *, timeout: float = 2.0) -> MessagingStatus:
        return await messaging_status(self.service, self.running_relays(), self.running_consumers(),
                                      self.metrics, timeout=timeout)


class MessagingGauges(BackgroundWorker):
    """Reads the report every ``interval`` seconds, so the gauges it sets (``outbox_backlog``,
    ``outbox_oldest_event_age_seconds``, ``consumer_lag``) are current for Prometheus and its
    alerts even when nobody asks ``/admin/messaging``."""

    name = "messaging-gauges"
    failure_event = "messaging_gauges_failed"  # the broker or the database away: next round

    def __init__(self, report: MessagingReport, *, interval: float = 15.0) -> None:
        self.report = report
        self.interval = self.backoff_initial = self.backoff_max = interval

    async def round(self) -> bool:
        await self.report.status()
        return False


async def messaging_status(service: str, relays: list[OutboxRelay], consumers: list[EventConsumer],
                           metrics: ServiceMetrics, *, timeout: float = 2.0) -> MessagingStatus:
    """The report, within ``timeout`` seconds; ``Problem(503)`` when the broker or the database
    cannot answer (a report that silently left them out would read as "all drained")."""
    brokers = {id(consumer.broker): consumer.broker for consumer in consumers}
    for broker in brokers.values():
        _require_connected(broker)
    try:
        async with asyncio.timeout(timeout):
            outbox, states, dead = await asyncio.gather(
                _outbox_status(relays, metrics),
                asyncio.gather(*(_consumer_status(consumer, metrics) for consumer in consumers)),
                asyncio.gather(*(_dead_letter_count(consumer) for consumer in consumers)),
            )
    except TimeoutError as exc:
        raise _unavailable(f"The broker or the database did not answer within {timeout:g} s.") from exc
    except Problem:
        raise
    except Exception as exc:  # a broker or database failure of any kind: no partial report
        raise _unavailable(f"Cannot read messaging state: {type(exc).__name__}: {exc}"[:300]) from exc
    dead_letters: dict[str, int] = {}
    for consumer, count in zip(consumers, dead, strict=True):
        dead_letters[consumer.durable] = count
    return MessagingStatus(service=service, outbox=outbox, consumers=list(states), dead_letters=dead_letters)


def _require_connected(broker: Broker) -> None:
    if broker.nc is None or not broker.nc.is_connected or broker.js is None:
        raise _unavailable(f"Not connected to the broker at {broker.url}.")


def _unavailable(detail: str) -> Problem:
    return MESSAGING_UNAVAILABLE(detail)


async def _outbox_status(relays: list[OutboxRelay], metrics: ServiceMetrics) -> OutboxStatus | None:
    if not relays:
        return None
    backlog, oldest = 0, None
    for relay in relays:  # one per service; several only in tests
        count, age = await relay.backlog_and_oldest_age()
        backlog += count
        if age is not None:
            oldest = age if oldest is None else max(oldest, age)
    metrics.outbox_backlog.set(backlog)
    metrics.outbox_oldest_age.set(oldest or 0.0)
    return OutboxStatus(backlog=backlog, oldest_age_seconds=oldest)


async def _consumer_status(consumer: EventConsumer, metrics: ServiceMetrics) -> ConsumerStatus:
    js = consumer.broker.js
    assert js is not None  # checked by _require_connected
    try:
        info = await js.consumer_info(STREAM, consumer.durable)
    except NotFoundError:  # not subscribed yet: lag unknown
        return ConsumerStatus(durable=consumer.durable, subjects=list(consumer.subjects), num_pending=None,
                              num_ack_pending=None, num_redelivered=None, delivered_stream_seq=None,
                              ack_floor_stream_seq=None)
    pending, ack_pending = info.num_pending or 0, info.num_ack_pending or 0
    metrics.consumer_lag.labels(consumer.durable).set(pending + ack_pending)
    return ConsumerStatus(
        durable=consumer.durable,
        subjects=list(consumer.subjects),
        num_pending=pending,
        num_ack_pending=ack_pending,
        num_redelivered=info.num_redelivered or 0,
        delivered_stream_seq=info.delivered.stream_seq if info.delivered else 0,
        ack_floor_stream_seq=info.ack_floor.stream_seq if info.ack_floor else 0,
    )


async def _dead_letter_count(consumer: EventConsumer) -> int:
    js = consumer.broker.js
    assert js is not None
    subject = f"{DEAD_LETTER_PREFIX}.{consumer.durable}"
    try:
        info = await js.stream_info(DEAD_LETTER_STREAM, subjects_filter=subject)
    except NotFoundError:  # nothing was ever dead-lettered on this broker
        return 0
    return (info.state.subjects or {}).get(subject, 0)
