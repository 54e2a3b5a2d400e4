"""How a bench drives the system: which user actions, and when each one starts.

Closed loop (``closed_loop``): C workers, each starting its next action when the last one answered,
as `microshop bench -c C` always did: the load slows down when the system does, so a stall delays
the requests that would have been sent during it and their latency never shows it.

Open loop (``open_loop``): action n is due at t0 + n/R whatever happened before, and its latency
counts from that intended start (as wrk2 corrects for coordinated omission): a stall of X seconds
shows up in the latency of every action due during it. An action that starts later than
``LATE_AFTER`` after its due time (the load generator itself could not keep up) is counted as
late; its latency still counts from its due time.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

CHECKOUT, BROWSE = "checkout", "browse"
LATE_AFTER = 0.010  # seconds


@dataclass(frozen=True)
class Sample:
    n: int
    kind: str  # CHECKOUT or BROWSE
    due: float  # when it was meant to start (the clock's seconds)
    started: float
    finished: float
    outcome: str  # "CONFIRMED", "OK", "HTTP 503", "ClientConnectorError", ...

    @property
    def latency(self) -> float:
        """From the intended start (open loop), which is the actual start in a closed loop."""
        return self.finished - self.due

    @property
    def late(self) -> bool:
        return self.started - self.due > LATE_AFTER


Action = Callable[[int, str], Awaitable[str]]  # (n, kind) -> outcome


def plan_actions(checkouts: int, browse_percent: float, seed: int = 0) -> list[str]:
    """The kinds of a user mix: each action browses with ``browse_percent`` % probability and
    checks out otherwise, drawn until ``checkouts`` checkouts (so the mix's size varies a little
    around checkouts / (1 - browse share), and is the same for the same seed)."""
    if not 0 <= browse_percent < 100:
        raise ValueError("the browsing share must be from 0 to 99 %")
    rng = random.Random(seed)
    kinds: list[str] = []
    while checkouts:
        kind = BROWSE if rng.random() * 100 < browse_percent else CHECKOUT
        kinds.append(kind)
        checkouts -= kind == CHECKOUT
    return kinds


async def closed_loop(kinds: list[str], concurrency: int, action: Action,
                      clock: Callable[[], float] = time.perf_counter) -> list[Sample]:
    """``concurrency`` workers taking the next action when their last one answered."""
    samples: list[Sample] = []
    queue = iter(enumerate(kinds))

    async def worker() -> None:
        for n, kind in queue:
            began = clock()
            outcome = await action(n, kind)
            samples.append(Sample(n, kind, began, began, clock(), outcome))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


async def open_loop(kinds: list[str], rate: float, action: Action, clock: Callable[[], float] = time.perf_counter,
                    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> list[Sample]:
    """Action n starts at t0 + n/``rate``, without waiting for earlier ones to answer."""
    if rate <= 0:
        raise ValueError("the rate must be positive")
    samples: list[Sample] = []
    start = clock()

    async def one(n: int, kind: str, due: float) -> None:
        began = clock()
        outcome = await action(n, kind)
        samples.append(Sample(n, kind, due, began, clock(), outcome))

    tasks = []
    for n, kind in enumerate(kinds):
        due = start + n / rate
        if (wait := due - clock()) > 0:
            await sleep(wait)
        tasks.append(asyncio.create_task(one(n, kind, due)))
    await asyncio.gather(*tasks)
    return samples


def parse_levels(text: str) -> list[int]:
    """``"1,4,16"`` -> [1, 4, 16]: the concurrency levels of a sweep."""
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise ValueError(f"a sweep is a list of concurrency levels of 1 or more, like 1,4,16,32,64; not {text!r}")
    return levels
