"""Durable JetStream pull consumers: what every event-consuming service runs.

A handler that fails is retried with backoff; after ``max_deliver`` attempts, or at once when the
event cannot even be parsed, the message is copied to ``deadletter.<consumer>`` (a stream of its
own, visible to operators) and terminated, so one poison event never blocks the stream.
Effects happen once only with an inbox: see inbox.with_inbox (SQL) or keep processed ids in the
same transaction as the effect (reports does, in DuckDB). This module imports no SQL library.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from . import messaging, metrics
from .background import BackgroundWorker
from .broker import Broker
from .events import DEAD_LETTER_PREFIX, STREAM, Event
from .telemetry import extract_context, tracer

log = structlog.get_logger("microshop.consumer")

EventHandler = Callable[[Event], Awaitable[None]]
BatchHandler = Callable[[list[Event]], Awaitable[None]]


class EventConsumer(BackgroundWorker):
    def __init__(
        self,
        broker: Broker,
        *,
        durable: str,
        subjects: list[str],
        handler: EventHandler,
        batch_handler: BatchHandler | None = None,
        batch_linger: float = 0.0,
        batch_size: int = 64,
        max_deliver: int = 8,
        ack_wait: float = 30.0,
    ) -> None:
        self.broker = broker
        self.durable = durable
        self.subjects = subjects
        self.handler = handler
        # Optional: applies a whole fetched batch in one go (one transaction instead of one per
        # event). If it fails, the batch is handled event by event, so a poison event is isolated.
        self.batch_handler = batch_handler
        # With a batch handler: after a short fetch, wait this long for more, so a trickle of
        # events still makes batches (a read model trades this much staleness for fewer commits).
        self.batch_linger = batch_linger
        self._subscription = None
        self.batch_size = batch_size
        self.max_deliver = max_deliver
        self.ack_wait = ack_wait
        self.task_name = f"consumer-{durable}"
        self._tracer = tracer("microshop.events")

    def start(self) -> None:
        super().start()
        messaging.register_consumer(self)  # for GET /admin/messaging

    async def stop(self) -> None:
        messaging.unregister_consumer(self)
        await super().stop()
        # Unsubscribe, or the open pull request stays with the server and swallows the next
        # messages until their ack_wait runs out.
        if self._subscription is not None:
            try:
                await self._subscription.unsubscribe()
            except Exception:  # the connection may already be gone; nothing left to release
                pass
            self._subscription = None

    async def _subscribe(self):
        js = await self.broker.wait_connected()
        config = ConsumerConfig(
            durable_name=self.durable,
            filter_subjects=self.subjects,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            # The server stops redelivering after this; we dead-letter on the last attempt.
            max_deliver=self.max_deliver,
        )
        await js.add_consumer(STREAM, config)  # create or update to the current filter
        self._subscription = await js.pull_subscribe_bind(durable=self.durable, stream=STREAM)
        return self._subscription

    async def run(self) -> None:
        sub = None
        while True:
            try:
                if sub is None:
                    sub = await self._subscribe()
                try:
                    messages = await sub.fetch(self.batch_size, timeout=1.0)
                except (NatsTimeout, TimeoutError):
                    continue
                if self.batch_handler and self.batch_linger and len(messages) < self.batch_size:
                    messages += await self._fetch_more(sub, self.batch_size - len(messages))
                if self.batch_handler and len(messages) > 1 and await self._handle_batch(messages):
                    continue
                for msg in messages:
                    await self._handle(msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker restart or outage: resubscribe after a pause
                log.warning("consumer_error", consumer=self.durable, error=str(exc))
                sub = None
                await asyncio.sleep(1.0)

    async def _fetch_more(self, sub, wanted: int) -> list:
        try:
            return await sub.fetch(wanted, timeout=self.batch_linger)
        except (NatsTimeout, TimeoutError):
            return []

    async def _handle_batch(self, messages) -> bool:
        """Apply a batch at once; False (nothing applied) sends it down the one-by-one path."""
        try:
            events = [Event.model_validate_json(msg.data) for msg in messages]
        except ValidationError:
            return False  # the one-by-one path dead-letters the unparseable one
        with self._tracer.start_as_current_span(f"consume batch of {len(events)}", kind=SpanKind.CONSUMER):
            try:
                await self.batch_handler(events)
            except Exception as exc:
                log.warning("event_batch_failed", consumer=self.durable, size=len(events),
                            error=f"{type(exc).__name__}: {exc}")
                return False
        for msg, event in zip(messages, events, strict=True):
            await msg.ack()
            metrics.EVENTS_CONSUMED.labels(self.durable, event.type, "ok").inc()
        return True

    async def _handle(self, msg) -> None:
        try:
            event = Event.model_validate_json(msg.data)
        except ValidationError as exc:
            await self._dead_letter(msg, f"unparseable event: {exc.errors()[:1]}")
            metrics.EVENTS_CONSUMED.labels(self.durable, "unknown", "dead_letter").inc()
            return
        context = extract_context(msg.headers or {})
        with self._tracer.start_as_current_span(
            f"consume {event.type}", context=context, kind=SpanKind.CONSUMER
        ) as span:
            span.set_attribute("messaging.consumer.group.name", self.durable)
            span.set_attribute("messaging.message.id", event.id)
            try:
                await self.handler(event)
            except Exception as exc:
                deliveries = msg.metadata.num_delivered
                log.warning(
                    "event_handler_failed",
                    consumer=self.durable,
                    event_id=event.id,
                    type=event.type,
                    delivery=deliveries,
                    error=f"{type(exc).__name__}: {exc}",
                )
                if deliveries >= self.max_deliver:
                    await self._dead_letter(msg, f"{type(exc).__name__}: {exc}")
                    metrics.EVENTS_CONSUMED.labels(self.durable, event.type, "dead_letter").inc()
                else:
                    # Capped exponential backoff between redeliveries.
                    await msg.nak(delay=min(0.5 * 2 ** (deliveries - 1), 30.0))
                    metrics.EVENTS_CONSUMED.labels(self.durable, event.type, "retry").inc()
                return
            await msg.ack()
            metrics.EVENTS_CONSUMED.labels(self.durable, event.type, "ok").inc()

    async def _dead_letter(self, msg, reason: str) -> None:
        js = await self.broker.wait_connected()
        headers = dict(msg.headers or {})
        headers.pop("Nats-Msg-Id", None)
        headers.update(
            {
                "Microshop-Dead-Letter-Reason": reason[:500],
                "Microshop-Original-Subject": msg.subject,
                "Microshop-Deliveries": str(msg.metadata.num_delivered),
            }
        )
        await js.publish(f"{DEAD_LETTER_PREFIX}.{self.durable}", msg.data, headers=headers)
        await msg.term()
        log.error("event_dead_lettered", consumer=self.durable, subject=msg.subject, reason=reason)

    async def pending(self) -> int:
        """Messages not yet delivered or acked: the consumer's lag."""
        js = await self.broker.wait_connected()
        info = await js.consumer_info(STREAM, self.durable)
        lag = (info.num_pending or 0) + (info.num_ack_pending or 0)
        metrics.CONSUMER_LAG.labels(self.durable).set(lag)
        return lag
