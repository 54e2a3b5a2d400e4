"""reports' use cases: keep the read model current from events (``Projection``), read it and
rebuild it by replay (``Reports``), and replay at start when the model is empty (``StartupReplay``).

Results are the plain data of domain.py; refusals are its domain errors.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from dataclasses import asdict

import structlog
from pydantic import ValidationError

from microshop_chassis.background import BackgroundWorker
from microshop_chassis.consumer import EventConsumer, PoisonEvent
from microshop_chassis.events import Event, subjects_of

from .domain import (
    CONSUMED_EVENTS,
    SCHEMA_VERSION,
    BrokerUnavailable,
    ModelStatus,
    RebuildInProgress,
    RebuildSummary,
    ReplayFailed,
    Sales,
)
from .replay import StreamReader
from .schemas import parse_event_data
from .store import ParsedEvent, ReportStore

log = structlog.get_logger("microshop.reports")

CONSUMED_SUBJECTS = subjects_of(*CONSUMED_EVENTS)


class Projection:
    """The durable consumer's handlers: each live event folded into the model, once."""

    def __init__(self, store: ReportStore) -> None:
        self.store = store

    async def apply(self, event: Event) -> None:
        """Data that breaks its contract is dead-lettered at once: no retry can fix it."""
        try:
            data = parse_event_data(event)
        except ValidationError as exc:
            raise PoisonEvent(f"{event.type} data breaks its contract: {exc.errors()[:1]}") from exc
        if not await self.store.apply(event, data):
            log.info("event_duplicate_skipped", event_id=event.id, type=event.type)

    async def apply_batch(self, events: list[Event]) -> None:
        """Many events in one DuckDB transaction: a DuckDB commit costs milliseconds, so one per
        event would cap the consumer near 100 events/s. A malformed one raises, and the consumer
        then handles the batch event by event, which isolates it."""
        await self.store.apply_many([(event, parse_event_data(event)) for event in events])


class Reports:
    """The model's figures and status, and its rebuild from the stream, which holds the durable
    consumer meanwhile."""

    def __init__(self, store: ReportStore, stream: StreamReader, consumer: EventConsumer, *,
                 replay_batch_size: int = 256) -> None:
        self.store = store
        self.stream = stream
        self.consumer = consumer
        self.replay_batch_size = replay_batch_size
        self.replay_due = False  # the model is empty (new file or another schema version)
        self._rebuild_lock = asyncio.Lock()

    async def open(self) -> None:
        """Open the model. The consumer is held until then, and on until a replay has filled the
        model when it was found empty."""
        await self.consumer.pause()
        self.replay_due = await self.store.open()
        if not self.replay_due:
            self.consumer.resume()

    # --- rebuild ------------------------------------------------------------------------------

    async def replay_if_due(self) -> RebuildSummary | None:
        """The replay ``open`` found due, once the broker is connected; None if none was."""
        if not self.replay_due:
            return None
        await self.stream.wait_connected()
        return await self.rebuild()

    async def rebuild(self) -> RebuildSummary:
        """Replay the stream from its first message into fresh tables and swap them in.

        The durable consumer is paused meanwhile; when it resumes, the events it gets again
        (delivered before or during the replay) are skipped: the replay refilled processed_events.
        """
        if self._rebuild_lock.locked():
            raise RebuildInProgress()
        if not self.stream.connected:
            raise BrokerUnavailable()
        async with self._rebuild_lock:
            started = time.perf_counter()
            await self.consumer.pause()  # returns once no handler runs
            try:
                replayed, applied = await self._replay_into_fresh_tables()
            finally:
                self.consumer.resume()
            self.replay_due = False
            result = RebuildSummary(events_replayed=replayed, events_applied=applied,
                                    duration_ms=round((time.perf_counter() - started) * 1000))
            log.info("rebuild_done", **asdict(result))
            return result

    async def _replay_into_fresh_tables(self) -> tuple[int, int]:
        await self.store.begin_fresh()
        replayed = applied = 0
        try:
            async with aclosing(self.stream.read(CONSUMED_SUBJECTS, batch_size=self.replay_batch_size)) as batches:
                async for events in batches:
                    replayed += len(events)
                    applied += await self.store.apply_fresh(_parse_batch(events))
        except Exception as exc:
            await self.store.discard_fresh()
            raise ReplayFailed(exc) from exc
        except BaseException:  # cancelled at shutdown: leave no half-built tables behind
            await asyncio.shield(self.store.discard_fresh())
            raise
        await self.store.swap_in_fresh()
        return replayed, applied

    # --- reads --------------------------------------------------------------------------------

    async def sales(self) -> Sales:
        return await self.store.sales()

    async def status(self) -> ModelStatus:
        applied, last_event_at, schema_version = await self.store.progress()
        return ModelStatus(
            events_applied=applied,
            last_event_at=last_event_at,
            schema_version=schema_version,
            code_schema_version=SCHEMA_VERSION,
            replaying=self.consumer.paused,
            consumer_pending=await self._consumer_pending(),
        )

    async def _consumer_pending(self) -> int | None:
        if not self.stream.connected:
            return None
        try:
            return await asyncio.wait_for(self.consumer.pending(), 2.0)
        except Exception:  # consumer not created yet, or the broker is away: unknown
            return None


class StartupReplay(BackgroundWorker):
    """Fills an empty model (a new file, or one of another schema version) by replaying the
    stream once at start. The broker may not be up yet, and a replay can fail midway: it is
    tried again with backoff until one succeeds (the model stays unversioned until then)."""

    name = "startup-replay"
    backoff_initial = 0.5
    backoff_max = 10.0
    failure_event = "startup_replay_failed"

    def __init__(self, reports: Reports) -> None:
        self.reports = reports

    async def round(self) -> bool:
        result = await self.reports.replay_if_due()
        if result is not None:
            log.info("startup_replay_done", **asdict(result))
        self.finish()
        return False


def _parse_batch(events: list[Event]) -> list[ParsedEvent]:
    """Typed data for each replayed event; events whose data breaks the contract are left out
    (the durable consumer dead-letters them), so one bad event cannot block a rebuild."""
    parsed = []
    for event in events:
        try:
            parsed.append((event, parse_event_data(event)))
        except ValidationError as exc:
            log.warning("replay_malformed_event", event_id=event.id, type=event.type, error=str(exc.errors()[:1]))
    return parsed
