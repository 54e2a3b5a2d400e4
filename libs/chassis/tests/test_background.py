"""BackgroundWorker.stop ends the loop even when a cancellation is swallowed on the way, as
asyncio.wait_for does on Python 3.11 when its inner wait completes at the same moment."""

import asyncio

import pytest
from microshop_chassis.background import BackgroundWorker


class SwallowsFirstCancel(BackgroundWorker):
    """Its own ``run()``, in place of the loop of rounds."""

    def __init__(self) -> None:
        self.swallowed = 0
        self.running = asyncio.Event()

    async def run(self) -> None:
        self.running.set()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.swallowed:
                    raise
                self.swallowed += 1  # like the wait_for race: the loop carries on

    async def round(self) -> bool:
        return False


class Crashes(BackgroundWorker):
    async def run(self) -> None:
        raise RuntimeError("broken")

    async def round(self) -> bool:
        return False


async def test_stop_cancels_again_until_the_loop_ends():
    worker = SwallowsFirstCancel()
    worker.start()
    await worker.running.wait()
    await asyncio.wait_for(worker.stop(), 5)
    assert worker.swallowed == 1


async def test_stop_reports_a_loop_that_crashed():
    worker = Crashes()
    worker.start()
    await asyncio.sleep(0)  # one step of the loop: the task runs and raises
    with pytest.raises(RuntimeError, match="broken"):
        await worker.stop()
