"""The one mechanism for loops that live as long as a service: the outbox relay, event consumers,
the broker connection, sweepers, delivery workers, saga recovery.

A worker's ``round()`` does one batch of work. Then the loop waits ``interval`` seconds, or less
if ``wake()`` is called; a round that returns True (more is waiting) runs again at once. A round
that raises is logged and tried again after a capped exponential backoff, so a database or broker
outage slows a loop down but never ends it. ``finish()`` ends the loop after its round (a task
that is retried until it succeeds once, such as connecting to the broker).

Stopping has two halves, so a graceful stop never cuts a round in the middle: ``drain(timeout)``
starts no new round and lets the one in hand finish (up to ``timeout`` seconds); ``stop()`` then
cancels whatever is left and waits until the loop has ended. ``stop()`` alone is the hard stop.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

import structlog

log = structlog.get_logger("microshop.background")


class BackgroundWorker(ABC):
    name = "background-worker"
    # Seconds between rounds when a round found nothing more to do; None: no wait (the round
    # itself waits, as a broker fetch does).
    interval: float | None = 1.0
    # After a failed round: wait backoff_initial, doubling up to backoff_max, until one succeeds.
    backoff_initial = 0.2
    backoff_max = 5.0
    # The log event for a failed round (kept per worker, so operators can search for one loop).
    failure_event = "background_round_failed"

    _task: asyncio.Task | None = None
    _wake_event: asyncio.Event | None = None
    _finish_event: asyncio.Event | None = None  # ends a backoff wait early once finished
    _finished = False
    started = False  # between start() and stop(): what /admin/messaging reports

    @abstractmethod
    async def round(self) -> bool:
        """One round of work; True when there is more to do right away."""

    async def on_failure(self, exc: Exception) -> None:  # noqa: B027 - optional: most loops need nothing
        """Called after a round raised, before the backoff (e.g. to drop a broken subscription)."""

    def start(self) -> None:
        self._finished = False
        self._wake_event = asyncio.Event()
        self._finish_event = asyncio.Event()
        self._task = asyncio.create_task(self.run(), name=self.name)
        self.started = True

    def wake(self) -> None:
        """Run the next round now rather than at the end of the interval."""
        if self._wake_event is not None:
            self._wake_event.set()

    def finish(self) -> None:
        """End the loop once the current round returns (no new round starts)."""
        self._finished = True
        if self._finish_event is not None:
            self._finish_event.set()
        self.wake()

    async def run(self) -> None:
        failures = 0
        while not self._finished:
            try:
                more = await self.round()
            except Exception as exc:  # any failure: the loop lives on, slower
                failures += 1
                delay = min(self.backoff_max, self.backoff_initial * 2 ** (failures - 1))
                log.warning(self.failure_event, worker=self.name, error=f"{type(exc).__name__}: {exc}",
                            retry_in=delay)
                await self.on_failure(exc)
                if self._finished:  # draining: a failed round is left to the next start
                    break
                await self._wait_unless_finished(delay)
                continue
            failures = 0
            if more or self._finished:
                continue
            await self._idle()

    async def _idle(self) -> None:
        if self.interval is None or self._wake_event is None:
            return
        try:
            await asyncio.wait_for(self._wake_event.wait(), self.interval)
        except TimeoutError:
            pass
        self._wake_event.clear()

    async def _wait_unless_finished(self, delay: float) -> None:
        if self._finish_event is None:
            await asyncio.sleep(delay)
            return
        try:
            await asyncio.wait_for(self._finish_event.wait(), delay)
        except TimeoutError:
            pass

    async def drain(self, timeout: float) -> None:
        """Start no new round and wait up to ``timeout`` seconds for the one in hand to finish;
        ``stop()`` then ends whatever is left."""
        self.finish()
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=max(0.0, timeout))

    async def stop(self) -> None:
        self.started = False
        task, self._task = self._task, None
        if task is None:
            return
        # Cancel until it ends: on Python 3.11, asyncio.wait_for (nats-py's fetch uses it) swallows
        # a cancellation that lands as its inner wait completes, and the loop would run on for ever.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()
