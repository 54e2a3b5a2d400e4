"""Reading the whole event stream from its first message, for a rebuild of the read model."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from microshop_chassis.events import STREAM, Event

log = structlog.get_logger("microshop.reports.replay")


async def read_stream(
    js: JetStreamContext, subjects: list[str], *, batch_size: int = 256, fetch_timeout: float = 5.0
) -> AsyncIterator[list[Event]]:
    """Yield the events on ``subjects`` in stream order, in batches, from the first message until
    none is pending. Unparseable messages are logged and left out (the durable consumer
    dead-letters them)."""
    # An ephemeral pull consumer of our own: it acks nothing and so leaves the durable one alone,
    # and the server removes it soon after we stop, even if this process dies mid-replay.
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
    try:
        pending = info.num_pending
        while pending > 0:
            messages = await sub.fetch(min(batch_size, pending), timeout=fetch_timeout)
            # num_pending counts what is still after this message; it grows if events arrive meanwhile.
            pending = messages[-1].metadata.num_pending
            batch = []
            for msg in messages:
                try:
                    batch.append(Event.model_validate_json(msg.data))
                except ValidationError as exc:
                    log.warning("replay_unparseable_event", subject=msg.subject, error=str(exc.errors()[:1]))
            yield batch
    finally:
        await sub.unsubscribe()
        with contextlib.suppress(Exception):  # it expires by itself anyway
            await js.delete_consumer(STREAM, info.name)
