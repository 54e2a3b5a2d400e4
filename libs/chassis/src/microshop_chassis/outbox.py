"""Transactional outbox: an event is written in the same local transaction as the state change
that caused it, and a relay publishes it to JetStream afterwards.

So a committed change always gets its event out (at least once), and a rolled-back change never
does. The relay sends ``Nats-Msg-Id = event id``: JetStream drops a re-publish of the same event
inside its duplicate window, and consumers' inboxes drop anything later.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import sqlalchemy as sa
import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy.ext.asyncio import AsyncSession

from .background import BackgroundWorker
from .broker import Broker
from .db import Database
from .events import Event
from .metrics import ServiceMetrics
from .tables import outbox
from .telemetry import extract_context, inject_headers, tracer

log = structlog.get_logger("microshop.outbox")

_WROTE_OUTBOX = "microshop.outbox_written"

# Built once: on these paths building a statement costs more than running it (docs/performance.md,
# "Prebuilt statements").
_STAGE = sa.insert(outbox)
_OLDEST = (sa.select(outbox.c.id, outbox.c.event_id, outbox.c.subject, outbox.c.event_type, outbox.c.payload,
                     outbox.c.headers)
           .order_by(outbox.c.id).limit(sa.bindparam("batch_size")))
_REMOVE = sa.delete(outbox).where(outbox.c.id.in_(sa.bindparam("ids", expanding=True)))


async def add_event(session: AsyncSession, event: Event) -> None:
    """Stage ``event`` in the caller's transaction; it is published only if that commits."""
    await session.execute(_STAGE, {
        "event_id": event.id,
        "subject": event.subject,
        "event_type": event.type,
        "payload": event.model_dump_json(),
        # The trace context of the change travels with the event to every consumer.
        "headers": json.dumps(inject_headers({})),
        "created_at": datetime.now(UTC),
    })
    session.info[_WROTE_OUTBOX] = True


class OutboxRelay(BackgroundWorker):
    """Publishes the outbox. Woken as soon as a transaction that wrote to the outbox commits, so
    events leave within milliseconds; the poll interval bounds the wait for rows written by
    another process (a replica). A failure (broker or database away) keeps the rows."""

    name = "outbox-relay"
    failure_event = "outbox_publish_failed"

    def __init__(
        self, db: Database, broker: Broker, *, batch_size: int = 200, poll_interval: float = 1.0,
        metrics: ServiceMetrics | None = None, tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.db = db
        self._tracer = tracer("microshop.outbox", tracer_provider)
        self.broker = broker
        self.batch_size = batch_size
        self.interval = poll_interval
        self.backoff_max = poll_interval
        self.metrics = metrics or ServiceMetrics()
        db.on_commit(self._after_commit)

    def _after_commit(self, info: dict) -> None:
        if info.pop(_WROTE_OUTBOX, False):
            self.wake()

    async def round(self) -> bool:
        await self.broker.wait_connected()
        return await self.publish_batch() == self.batch_size

    async def drain(self, timeout: float) -> None:
        """At a graceful stop: publish what was committed before it, while the broker is reachable
        and time is left (``timeout`` seconds); the rest waits in the table for the next start."""
        deadline = time.monotonic() + timeout
        connected = self.broker.nc is not None and self.broker.nc.is_connected
        await super().drain(timeout if connected else 0.0)  # its round would wait for the broker
        try:
            await self.broker.ping()
            await asyncio.wait_for(self._publish_all(), max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # broker away or out of time: nothing is lost, only delayed
            log.warning("outbox_left_for_next_start", error=f"{type(exc).__name__}: {exc}")

    async def _publish_all(self) -> None:
        while await self.publish_batch() == self.batch_size:
            pass

    async def publish_batch(self) -> int:
        """Publish the oldest pending events; return how many were published."""
        async with self.db.session() as session:
            rows = (await session.execute(_OLDEST, {"batch_size": self.batch_size})).all()
        if not rows:
            self.metrics.outbox_backlog.set(0)
            return 0
        js = await self.broker.wait_connected()
        # A publish span per event, a child of the change that wrote it (its trace context travelled
        # in the row); the message carries the publish span's context, so consumers are its children.
        spans = [self._tracer.start_span(
            f"publish {row.event_type}", context=extract_context(json.loads(row.headers)), kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "nats", "messaging.operation.type": "send",
                        "messaging.destination.name": row.subject, "messaging.message.id": row.event_id})
            for row in rows]
        # Sent in order on one connection, so the stream keeps the outbox order.
        acks = await asyncio.gather(
            *(
                js.publish(
                    row.subject,
                    row.payload.encode(),
                    headers={**inject_headers({}, span), "Nats-Msg-Id": row.event_id},
                )
                for row, span in zip(rows, spans, strict=True)
            ),
            return_exceptions=True,
        )
        for span, ack in zip(spans, acks, strict=True):
            if isinstance(ack, BaseException):
                span.set_status(Status(StatusCode.ERROR, type(ack).__name__))
            span.end()
        published = []
        for row, ack in zip(rows, acks, strict=True):
            if isinstance(ack, BaseException):
                break  # keep order: nothing after a failed publish is deleted
            published.append(row.id)
            self.metrics.series(self.metrics.outbox_published, row.event_type).inc()
        if published:
            async with self.db.transaction() as session:
                await session.execute(_REMOVE, {"ids": published})
        failed = next((a for a in acks if isinstance(a, BaseException)), None)
        if failed is not None:
            raise failed
        # A short batch drained the table (as of our read); a full one leaves an unknown rest.
        self.metrics.outbox_backlog.set(0 if len(rows) < self.batch_size else self.batch_size)
        return len(published)

    async def backlog(self) -> int:
        return (await self.backlog_and_oldest_age())[0]

    async def backlog_and_oldest_age(self) -> tuple[int, float | None]:
        """Unpublished events, and the age in seconds of the oldest of them (None when none)."""
        async with self.db.session() as session:
            count, oldest = (
                await session.execute(sa.select(sa.func.count(), sa.func.min(outbox.c.created_at)))
            ).one()
        if oldest is None:
            return count, None
        if oldest.tzinfo is None:  # SQLite keeps no zone; the relay writes UTC
            oldest = oldest.replace(tzinfo=UTC)
        return count, max(0.0, (datetime.now(UTC) - oldest).total_seconds())
