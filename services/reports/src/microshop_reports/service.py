"""reports' use cases: keep the read model current from events, rebuild it by replay, read it."""

from __future__ import annotations

import asyncio
import time

import structlog
from pydantic import ValidationError

from microshop_chassis.broker import Broker
from microshop_chassis.consumer import EventConsumer
from microshop_chassis.errors import Problem
from microshop_chassis.events import Event, subject_for

from .domain import CONSUMED_EVENTS, SCHEMA_VERSION
from .replay import read_stream
from .schemas import RebuildResult, ReportStatus, SalesReport, parse_event_data
from .store import ParsedEvent, ReportStore

log = structlog.get_logger("microshop.reports")

CONSUMED_SUBJECTS = [subject_for(source, event_type) for event_type, source in CONSUMED_EVENTS.items()]
DURABLE = "reports"


class Reports:
    def __init__(self, store: ReportStore, broker: Broker, *, replay_batch_size: int = 256) -> None:
        self.store = store
        self.broker = broker
        self.replay_batch_size = replay_batch_size
        self.consumer = EventConsumer(broker, durable=DURABLE, subjects=CONSUMED_SUBJECTS, handler=self.handle,
                                      batch_handler=self.handle_batch, batch_linger=0.1)
        self._rebuild_lock = asyncio.Lock()
        self._startup: asyncio.Task | None = None
        # The durable consumer's pause switch, cleared while a rebuild runs: its handler waits here.
        # (Not EventConsumer.stop()/start(): stop() leaves the pull subscription and its open pull
        # request behind, so events published in the next second reached nobody until ack_wait
        # redelivered them 30 s later, and Broker.close()'s drain then hung on them for 30 s.)
        self._not_rebuilding = asyncio.Event()
        self._not_rebuilding.set()

    async def handle(self, event: Event) -> None:
        """The durable consumer's handler. Malformed data raises, so the consumer retries and then
        dead-letters the event."""
        await self._not_rebuilding.wait()  # neither applied nor acked until the rebuild swapped
        if not await self.store.apply(event, parse_event_data(event)):
            log.info("event_duplicate_skipped", event_id=event.id, type=event.type)

    async def handle_batch(self, events: list[Event]) -> None:
        """Many events in one DuckDB transaction: a DuckDB commit costs milliseconds, so one per
        event would cap the consumer near 100 events/s. A malformed one raises, and the chassis
        then handles the batch event by event, which isolates it."""
        await self._not_rebuilding.wait()
        await self.store.apply_many([(event, parse_event_data(event)) for event in events])

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, *, replay_first: bool) -> None:
        """Start consuming; first replay the whole stream when the model is empty (new file or new
        schema version). The replay runs in the background: the broker may not be up yet."""
        if replay_first:
            self._not_rebuilding.clear()  # live events wait for the replayed model
            self._startup = asyncio.create_task(self._replay_at_start(), name="reports-startup-replay")
        self.consumer.start()

    async def _replay_at_start(self) -> None:
        delay = 0.5
        while True:
            await self.broker.wait_connected()
            try:
                result = await self.rebuild()
                log.info("startup_replay_done", **result.model_dump())
                return
            except Exception as exc:  # broker hiccup: the model stays unversioned, so try again
                log.warning("startup_replay_failed", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def stop(self) -> None:
        if self._startup:
            self._startup.cancel()
            try:
                await self._startup
            except asyncio.CancelledError:
                pass
        await self.consumer.stop()

    # --- rebuild ------------------------------------------------------------------------------

    @property
    def replaying(self) -> bool:
        return not self._not_rebuilding.is_set()

    async def rebuild(self) -> RebuildResult:
        """Replay the stream from its first message into fresh tables and swap them in.

        The durable consumer is paused meanwhile; when it resumes, the events it gets again
        (delivered before or during the replay) are skipped: the replay refilled processed_events.
        """
        if self._rebuild_lock.locked():
            raise Problem(409, "A rebuild is already running.", type="rebuild-in-progress")
        if not self.broker.ready.is_set():
            raise Problem(503, "Not connected to the broker; cannot replay.", type="broker-unavailable")
        async with self._rebuild_lock:
            started = time.perf_counter()
            # An apply the consumer already handed to the DuckDB thread finishes before our first
            # statement (that thread runs jobs one at a time, in order); later ones wait.
            self._not_rebuilding.clear()
            try:
                replayed, applied = await self._replay_into_fresh_tables()
            finally:
                self._not_rebuilding.set()
            result = RebuildResult(
                events_replayed=replayed, events_applied=applied,
                duration_ms=round((time.perf_counter() - started) * 1000),
            )
            log.info("rebuild_done", **result.model_dump())
            return result

    async def _replay_into_fresh_tables(self) -> tuple[int, int]:
        js = await self.broker.wait_connected()
        await self.store.begin_fresh()
        replayed = applied = 0
        try:
            async for events in read_stream(js, CONSUMED_SUBJECTS, batch_size=self.replay_batch_size):
                replayed += len(events)
                applied += await self.store.apply_fresh(_parse_batch(events))
        except Exception as exc:
            await self.store.discard_fresh()
            if isinstance(exc, Problem):
                raise
            raise Problem(503, f"The replay failed: {type(exc).__name__}: {exc}", type="replay-failed") from exc
        except BaseException:  # cancelled at shutdown: leave no half-built tables behind
            await asyncio.shield(self.store.discard_fresh())
            raise
        await self.store.swap_in_fresh()
        return replayed, applied

    # --- reads --------------------------------------------------------------------------------

    async def sales(self) -> SalesReport:
        return SalesReport(**await self.store.sales())

    async def status(self) -> ReportStatus:
        return ReportStatus(
            **await self.store.status(),
            code_schema_version=SCHEMA_VERSION,
            replaying=self.replaying,
            consumer_pending=await self._consumer_pending(),
        )

    async def _consumer_pending(self) -> int | None:
        if not self.broker.ready.is_set():
            return None
        try:
            return await asyncio.wait_for(self.consumer.pending(), 2.0)
        except Exception:  # consumer not created yet, or the broker is away: unknown
            return None


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
