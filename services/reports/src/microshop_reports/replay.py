"""Reading the whole event stream from its first message, for a rebuild of the read model."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import structlog
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from microshop_chassis.broker import Broker
from microshop_chassis.downstream import ServiceUnavailable
from microshop_chassis.events import STREAM, Event

log = structlog.get_logger("microshop.reports.replay")


class StreamReader:
    """The event stream's history, read through the service's broker connection."""

    def __init__(self, broker: Broker, *, fetch_timeout: float = 5.0) -> None:
        self.broker = broker
        self.fetch_timeout = fetch_timeout

    @property
    def connected(self) -> bool:
        return self.broker.ready.is_set()

    async def wait_connected(self) -> None:
        await self.broker.wait_connected()

    async def read(self, subjects: list[str], *, batch_size: int = 256) -> AsyncIterator[list[Event]]:
        """Yield the events on ``subjects`` in stream order, in batches, from the first message until
        none is pending. Unparseable messages are logged and left out (the durable consumer
        dead-letters them). A broker failure midway raises ``ServiceUnavailable``.

        Close the iterator when done early (``contextlib.aclosing``): that removes its consumer."""
        js = await self.broker.wait_connected()
        try:
            # An ephemeral pull consumer of our own: it acks nothing and so leaves the durable one
            # alone, and the server removes it soon after we stop, even if this process dies mid-replay.
            info = await js.add_consumer(
                STREAM,
                ConsumerConfig(
                    filter_subjects=subjects,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_policy=AckPolicy.NONE,
                    inactive_threshold=30.0,
                    mem_storage=True,
                ),
            )
            sub = await js.pull_subscribe_bind(consumer=info.name, stream=STREAM)
        except Exception as exc:
            raise _unavailable(exc) from exc
        try:
            pending = info.num_pending
            while pending > 0:
                try:
                    messages = await sub.fetch(min(batch_size, pending), timeout=self.fetch_timeout)
                except Exception as exc:
                    raise _unavailable(exc) from exc
                # num_pending counts what is still after this message; it grows if events arrive meanwhile.
                pending = messages[-1].metadata.num_pending
                yield _parse(messages)
        finally:
            # The connection may be gone by now; the server removes the consumer by itself then.
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await js.delete_consumer(STREAM, info.name)


def _parse(messages: list) -> list[Event]:
    batch = []
    for msg in messages:
        try:
            batch.append(Event.model_validate_json(msg.data))
        except ValidationError as exc:
            log.warning("replay_unparseable_event", subject=msg.subject, error=str(exc.errors()[:1]))
    return batch


def _unavailable(exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable("broker", f"{type(exc).__name__}: {exc}")
