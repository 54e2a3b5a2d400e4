"""Loops that run for the life of a service (outbox relay, consumers, sweepers, delivery workers)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod


class BackgroundWorker(ABC):
    """``start()`` runs ``run()`` in a task of its own; ``stop()`` cancels it and waits for it."""

    task_name = "background-worker"
    _task: asyncio.Task | None = None

    @abstractmethod
    async def run(self) -> None: ...

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=self.task_name)

    async def stop(self) -> None:
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
