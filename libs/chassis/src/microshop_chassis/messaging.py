"""What this process's messaging is doing: the outbox relay and event consumers it runs, their
backlog and lag, and the events its consumers dead-lettered. Served at ``GET /admin/messaging``.

``OutboxRelay`` and ``EventConsumer`` register here when started and unregister when stopped (a
weak set besides, so one never stopped cannot leak past its owner), like resilience.py's circuit
breakers: the app factory needs no reference to them, and a service wires nothing.

Everything comes from the service's own outbox table and from JetStream, so an operator (or
``microshop verify``) checks that events drained without touching any database.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

from nats.js.errors import NotFoundError
from pydantic import BaseModel, Field

from . import metrics
from .errors import Problem
from .events import DEAD_LETTER_PREFIX, DEAD_LETTER_STREAM, STREAM

if TYPE_CHECKING:
    from .broker import Broker
    from .consumer import EventConsumer
    from .outbox import OutboxRelay

_relays: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()
_consumers: weakref.WeakSet[EventConsumer] = weakref.WeakSet()


def register_relay(relay: OutboxRelay) -> None:
    _relays.add(relay)


def unregister_relay(relay: OutboxRelay) -> None:
    _relays.discard(relay)


def register_consumer(consumer: EventConsumer) -> None:
    _consumers.add(consumer)


def unregister_consumer(consumer: EventConsumer) -> None:
    _consumers.discard(consumer)


def running_relays() -> list[OutboxRelay]:
    return list(_relays)


def running_consumers() -> list[EventConsumer]:
    """The live consumers of this process, by durable name."""
    return sorted(_consumers, key=lambda consumer: consumer.durable)


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


async def messaging_status(service: str, *, timeout: float = 2.0) -> MessagingStatus:
    """The report, within ``timeout`` seconds; ``Problem(503)`` when the broker or the database
    cannot answer (a report that silently left them out would read as "all drained")."""
    relays = running_relays()
    consumers = running_consumers()
    brokers = {id(consumer.broker): consumer.broker for consumer in consumers}
    for broker in brokers.values():
        _require_connected(broker)
    try:
        async with asyncio.timeout(timeout):
            outbox, states, dead = await asyncio.gather(
                _outbox_status(relays),
                asyncio.gather(*(_consumer_status(consumer) for consumer in consumers)),
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
    return Problem(503, detail, type="messaging-unavailable", title="Messaging state unavailable")


async def _outbox_status(relays: list[OutboxRelay]) -> OutboxStatus | None:
    if not relays:
        return None
    backlog, oldest = 0, None
    for relay in relays:  # one per process; several only in tests
        count, age = await relay.backlog_and_oldest_age()
        backlog += count
        if age is not None:
            oldest = age if oldest is None else max(oldest, age)
    metrics.OUTBOX_BACKLOG.set(backlog)
    return OutboxStatus(backlog=backlog, oldest_age_seconds=oldest)


async def _consumer_status(consumer: EventConsumer) -> ConsumerStatus:
    js = consumer.broker.js
    assert js is not None  # checked by _require_connected
    try:
        info = await js.consumer_info(STREAM, consumer.durable)
    except NotFoundError:  # not subscribed yet: lag unknown
        return ConsumerStatus(durable=consumer.durable, subjects=list(consumer.subjects), num_pending=None,
                              num_ack_pending=None, num_redelivered=None, delivered_stream_seq=None,
                              ack_floor_stream_seq=None)
    pending, ack_pending = info.num_pending or 0, info.num_ack_pending or 0
    metrics.CONSUMER_LAG.labels(consumer.durable).set(pending + ack_pending)
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
