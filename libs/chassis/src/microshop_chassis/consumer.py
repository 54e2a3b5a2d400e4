"""Durable JetStream pull consumers: what every event-consuming service runs.

Delivery semantics, the same for every consumer:

- a handler that returns has handled the event: it is acked;
- a handler that raises is retried with backoff; after ``max_deliver`` attempts the event is
  dead-lettered;
- a handler that raises ``PoisonEvent`` (the event breaks its contract: no retry can help), or an
  envelope that cannot even be parsed, is dead-lettered at once.

Dead-lettering copies the message to ``deadletter.<consumer>`` (a stream of its own, visible to
operators), with a de-duplication id of ``<consumer>:<event id>`` so a redelivery is not parked
twice, then terminates it: one poison event never blocks the stream. ``pause()`` holds deliveries
(no handler runs until ``resume()``) without giving up the subscription. A graceful stop
(``drain``, then ``stop``) fetches nothing new and acks what it holds before unsubscribing.

Effects happen once only with an inbox: see inbox.with_inbox (SQL) or keep processed ids in the
same transaction as the effect (reports does, in DuckDB). This module imports no SQL library.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import ValidationError

from .background import BackgroundWorker
from .broker import Broker
from .events import DEAD_LETTER_PREFIX, STREAM, Event
from .metrics import ServiceMetrics
from .telemetry import extract_context, tracer

log = structlog.get_logger("microshop.consumer")

EventHandler = Callable[[Event], Awaitable[None]]
BatchHandler = Callable[[list[Event]], Awaitable[None]]


class PoisonEvent(Exception):
    """Raised by a handler for an event no retry can fix: it is dead-lettered at once."""


class EventConsumer(BackgroundWorker):
    interval = None  # each round waits in its fetch
    backoff_initial = backoff_max = 1.0  # broker restart or outage: resubscribe after a pause
    failure_event = "consumer_error"

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
        metrics: ServiceMetrics | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.broker = broker
        self.durable = durable
        self.subjects = subjects
        self.handler = handler
        # Optional: applies a whole fetched batch in one go (one transaction instead of one per
        # event). If it fails, the batch is handled event by event, so a poison event is isolated.
        self.batch_handler = batch_handler
        # With a batch handler: after a short fetch, keep fetching for up to this long after the
        # first message (or until the batch is full), so a trickle of events still makes batches
        # (a read model trades this much staleness for fewer commits).
        self.batch_linger = batch_linger
        self.batch_size = batch_size
        self.max_deliver = max_deliver
        self.ack_wait = ack_wait
        self.name = f"consumer-{durable}"
        self.metrics = metrics or ServiceMetrics()
        self._tracer = tracer("microshop.events", tracer_provider)
        self._subscription = None
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._not_handling = asyncio.Event()  # set while no handler runs
        self._not_handling.set()

    # --- pause and resume ---------------------------------------------------------------------

    async def pause(self) -> None:
        """Hold deliveries: once this returns, no handler runs until ``resume()``. Messages fetched
        meanwhile wait, unacked (redelivered after ``ack_wait`` if the pause outlasts it)."""
        self._resumed.clear()
        await self._not_handling.wait()

    def resume(self) -> None:
        self._resumed.set()

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    # --- the loop -----------------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """No new fetch; the messages in hand are handled and acked (up to ``timeout``), so none is
        redelivered to another member after the stop. A paused consumer handles nothing more."""
        connected = self.broker.nc is not None and self.broker.nc.is_connected
        # Paused, or waiting for the broker: nothing is in hand, and waiting would not change that.
        await super().drain(timeout if connected and not self.paused else 0.0)

    async def stop(self) -> None:
        await super().stop()
        # Unsubscribe, or the open pull request stays with the server and swallows the next
        # messages until their ack_wait runs out.
        await self._drop_subscription()

    async def on_failure(self, exc: Exception) -> None:
        await self._drop_subscription()

    async def _drop_subscription(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:
                await subscription.unsubscribe()
            except Exception:  # the connection may already be gone; nothing left to release
                pass

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

    async def round(self) -> bool:
        await self._resumed.wait()
        sub = self._subscription or await self._subscribe()
        try:
            messages = await sub.fetch(self.batch_size, timeout=1.0)
        except (NatsTimeout, TimeoutError):
            return False
        if self.batch_handler and self.batch_linger and len(messages) < self.batch_size:
            messages += await self._fetch_more(sub, self.batch_size - len(messages))
        await self._resumed.wait()
        self._not_handling.clear()
        try:
            if self.batch_handler and len(messages) > 1 and await self._handle_batch(messages):
                return False
            for msg in messages:
                await self._handle(msg)
        finally:
            self._not_handling.set()
        return False

    async def _fetch_more(self, sub, wanted: int) -> list:
        """Fetch until ``wanted`` more are in hand or ``batch_linger`` has passed since the first
        message: nats-py's fetch returns as soon as anything is there, so one fetch lingered for
        one more message at most and a steady trickle still made batches of two or three."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_linger
        more: list = []
        # Below a millisecond left, another pull request costs more than it could gather.
        while len(more) < wanted and (left := deadline - loop.time()) > 0.001:
            try:
                more += await sub.fetch(wanted - len(more), timeout=left)
            except (NatsTimeout, TimeoutError):
                break
        return more

    async def _handle_batch(self, messages) -> bool:
        """Apply a batch at once; False (nothing applied) sends it down the one-by-one path."""
        try:
            events = [Event.model_validate_json(msg.data) for msg in messages]
        except ValidationError:
            return False  # the one-by-one path dead-letters the unparseable one
        contexts = [trace.get_current_span(extract_context(msg.headers or {})).get_span_context() for msg in messages]
        with self._tracer.start_as_current_span(
            f"consume batch of {len(events)}", kind=SpanKind.CONSUMER,
            links=[trace.Link(context) for context in contexts if context.is_valid],
        ) as batch:
            # And a span per event in the trace of the request that caused it, linked to the batch
            # that applied it: so each checkout's trace shows its consumers, batched or not.
            spans = [self._tracer.start_span(
                f"consume {event.type}", context=extract_context(msg.headers or {}), kind=SpanKind.CONSUMER,
                links=[trace.Link(batch.get_span_context())],
                attributes=self._span_attributes(msg, event) | {"messaging.batch.message_count": len(events)})
                for msg, event in zip(messages, events, strict=True)]
            try:
                await self.batch_handler(events)
            except Exception as exc:
                log.warning("event_batch_failed", consumer=self.durable, size=len(events),
                            error=f"{type(exc).__name__}: {exc}")
                for span in spans:
                    span.set_status(Status(StatusCode.ERROR, "batch failed: handled one by one"))
                return False
            finally:
                for span in spans:
                    span.end()
        for msg, event in zip(messages, events, strict=True):
            await msg.ack()
            self.metrics.series(self.metrics.events_consumed, self.durable, event.type, "ok").inc()
        return True

    async def _handle(self, msg) -> None:
        try:
            event = Event.model_validate_json(msg.data)
        except ValidationError as exc:
            await self._dead_letter(msg, None, f"unparseable event: {exc.errors()[:1]}")
            self.metrics.events_consumed.labels(self.durable, "unknown", "dead_letter").inc()
            return
        context = extract_context(msg.headers or {})
        with self._tracer.start_as_current_span(
            f"consume {event.type}", context=context, kind=SpanKind.CONSUMER
        ) as span:
            span.set_attributes(self._span_attributes(msg, event))
            try:
                await self.handler(event)
            except PoisonEvent as exc:
                await self._dead_letter(msg, event, str(exc))
                self.metrics.events_consumed.labels(self.durable, event.type, "dead_letter").inc()
                return
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
                    await self._dead_letter(msg, event, f"{type(exc).__name__}: {exc}")
                    self.metrics.events_consumed.labels(self.durable, event.type, "dead_letter").inc()
                else:
                    # Capped exponential backoff between redeliveries.
                    await msg.nak(delay=min(0.5 * 2 ** (deliveries - 1), 30.0))
                    self.metrics.events_consumed.labels(self.durable, event.type, "retry").inc()
                return
            await msg.ack()
            self.metrics.series(self.metrics.events_consumed, self.durable, event.type, "ok").inc()

    def _span_attributes(self, msg, event: Event) -> dict:
        return {"messaging.system": "nats", "messaging.operation.type": "process",
                "messaging.destination.name": msg.subject, "messaging.consumer.group.name": self.durable,
                "messaging.message.id": event.id}

    async def _dead_letter(self, msg, event: Event | None, reason: str) -> None:
        js = await self.broker.wait_connected()
        headers = dict(msg.headers or {})
        # Parked once per consumer and event, even when the event is delivered again after a crash
        # between this publish and the term() below.
        dedupe = event.id if event is not None else f"seq-{msg.metadata.sequence.stream}"
        headers.update(
            {
                "Nats-Msg-Id": f"{self.durable}:{dedupe}",
                "Microshop-Dead-Letter-Reason": reason[:500],
                "Microshop-Original-Subject": msg.subject,
                "Microshop-Deliveries": str(msg.metadata.num_delivered),
            }
        )
        await js.publish(f"{DEAD_LETTER_PREFIX}.{self.durable}", msg.data, headers=headers)
        await msg.term()
        log.error("event_dead_lettered", consumer=self.durable, subject=msg.subject, reason=reason,
                  event_id=event.id if event is not None else None)

    async def pending(self) -> int:
        """Messages not yet delivered or acked: the consumer's lag."""
        js = await self.broker.wait_connected()
        info = await js.consumer_info(STREAM, self.durable)
        lag = (info.num_pending or 0) + (info.num_ack_pending or 0)
        self.metrics.consumer_lag.labels(self.durable).set(lag)
        return lag
