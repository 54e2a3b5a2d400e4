"""Resilience primitives for calls to another service: circuit breaker, bulkhead, retry budget.

``ServiceClient`` keeps one of each per instance, i.e. per downstream target, and consults them on
every attempt (a retry is an attempt too):

- ``CircuitBreaker``: after enough recent attempts failed, stop calling the target for a while and
  fail fast with ``CircuitOpen``; then let a few trial calls through to see whether it is back.
- ``Bulkhead``: at most ``limit`` calls to the target in flight; one more waits briefly, then
  fails fast with ``BulkheadFull``, so one slow target cannot tie up every task of the caller.
- ``RetryBudget``: retries may add at most ``ratio`` (20 %) on top of first attempts over a
  sliding time window, so retries cannot multiply the load on a target that is already down.

Both rejections subclass ``ServiceUnavailable``: existing callers already treat that as "the
outcome is unknown"; for a rejection it is known that nothing was even sent.

Why no library: ``aiobreaker`` (last release 2021) and ``purgatory`` count consecutive failures
rather than a failure rate over a sliding window, neither has a bulkhead or a retry budget, and we
need async, per-target state exposed as Prometheus metrics and an injectable clock for
deterministic tests. It is a couple of hundred lines; we keep dependencies few.

All of this runs on one event loop and never awaits while changing state, so no locks are needed.
Each guard reports to the ``ServiceMetrics`` of the service holding it (a private one if none is
given), and the service's ``/health`` shows the state of the breakers of the clients it holds.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from enum import IntEnum
from typing import Any

from .downstream import ServiceUnavailable
from .metrics import ServiceMetrics

Clock = Callable[[], float]


class CircuitOpen(ServiceUnavailable):
    """The target's circuit is open: the call was not attempted."""


class BulkheadFull(ServiceUnavailable):
    """Too many calls to the target are in flight already: the call was not attempted."""


class DeadlineExceeded(ServiceUnavailable):
    """The caller's own deadline (what is left of the request it serves) ran out before the call
    was sent or before the target answered, while the client's own timeout had not: it says
    nothing about the target, so no breaker counts it and it is not retried."""


class State(IntEnum):
    """Values of the ``circuit_breaker_state`` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


def breaker_states(breakers) -> dict[str, str]:
    """The given breakers by target ("closed", "half_open", "open"); where two guard one target,
    the worse state shows. For /health and `microshop status`."""
    states: dict[str, State] = {}
    for breaker in breakers:
        states[breaker.target] = max(states.get(breaker.target, State.CLOSED), breaker.state)
    return {target: state.name.lower() for target, state in sorted(states.items())}


class CircuitBreaker:
    """Closed → open when, among the last ``window`` calls (and at least ``min_calls`` of them),
    the share of failures reaches ``failure_rate``. Open → half-open after ``open_seconds``.
    Half-open lets up to ``half_open_calls`` trial calls through at a time; the first success
    closes the circuit (with an empty window), the first failure opens it again.

    Use: ``permit = breaker.acquire()`` (raises ``CircuitOpen``), then exactly one of
    ``breaker.record(permit, failed=...)`` or ``breaker.release(permit)`` (not attempted,
    cancelled, or cut short by the caller's own deadline: no verdict). A result of a call admitted
    before the last state change is ignored, so, say, a slow success from before the circuit opened
    cannot close it again.
    """

    def __init__(
        self,
        target: str,
        *,
        window: int = 20,
        min_calls: int = 10,
        failure_rate: float = 0.5,
        open_seconds: float = 5.0,
        half_open_calls: int = 3,
        clock: Clock = time.monotonic,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        if not 0 < min_calls <= window:
            raise ValueError("need 0 < min_calls <= window")
        self.metrics = metrics or ServiceMetrics()
        self.target = target
        self.window = window
        self.min_calls = min_calls
        self.failure_rate = failure_rate
        self.open_seconds = open_seconds
        self.half_open_calls = half_open_calls
        self.clock = clock
        self._outcomes: deque[bool] = deque(maxlen=window)  # True = failed, newest last
        self._state = State.CLOSED
        self._generation = 0  # bumped on every state change; a permit carries the one it was issued in
        self._opened_at = 0.0
        self._trials = 0  # half-open calls in flight
        self.rejected = 0
        self.metrics.breaker_state.labels(target).set(State.CLOSED)

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self.clock() - self._opened_at >= self.open_seconds:
            self._move(State.HALF_OPEN)
        return self._state

    def acquire(self) -> int:
        """A permit to make one call, or ``CircuitOpen``."""
        state = self.state
        if state is State.OPEN or (state is State.HALF_OPEN and self._trials >= self.half_open_calls):
            self.rejected += 1
            self.metrics.breaker_rejected.labels(self.target).inc()
            raise CircuitOpen(self.target, f"circuit {state.name.lower().replace('_', '-')}")
        if state is State.HALF_OPEN:
            self._trials += 1
        return self._generation

    def would_reject(self) -> bool:
        """Whether ``acquire`` would fail now (without counting a rejection)."""
        state = self.state
        return state is State.OPEN or (state is State.HALF_OPEN and self._trials >= self.half_open_calls)

    def release(self, permit: int) -> None:
        """The permitted call was not made, or was cancelled: no verdict on the target."""
        if permit == self._generation and self._state is State.HALF_OPEN:
            self._trials -= 1

    def record(self, permit: int, *, failed: bool) -> None:
        if permit != self._generation:
            return  # admitted under an earlier state: says nothing about this one
        if self._state is State.HALF_OPEN:
            self._trials -= 1
            self._move(State.OPEN if failed else State.CLOSED)
            return
        self._outcomes.append(failed)
        calls = len(self._outcomes)
        if calls >= self.min_calls and sum(self._outcomes) / calls >= self.failure_rate:
            self._move(State.OPEN)

    def _move(self, state: State) -> None:
        self._state = state
        self._generation += 1
        self._trials = 0
        self._outcomes.clear()
        if state is State.OPEN:
            self._opened_at = self.clock()
        self.metrics.breaker_state.labels(self.target).set(state)
        self.metrics.breaker_transitions.labels(self.target, state.name.lower()).inc()

    def snapshot(self) -> dict[str, Any]:
        """For status tools: state, the window's calls and failures, seconds until half-open."""
        state = self.state
        failures = sum(self._outcomes)
        return {
            "target": self.target,
            "state": state.name.lower().replace("_", "-"),
            "calls_in_window": len(self._outcomes),
            "failures_in_window": failures,
            "failure_rate": failures / len(self._outcomes) if self._outcomes else 0.0,
            "open_for_seconds": (
                max(0.0, self.open_seconds - (self.clock() - self._opened_at)) if state is State.OPEN else 0.0
            ),
            "half_open_trials_in_flight": self._trials,
            "rejected": self.rejected,
        }


class Bulkhead:
    """At most ``limit`` calls to the target at once. One more waits up to ``max_wait`` seconds
    (never past the call's own deadline) for a slot, then fails fast with ``BulkheadFull``."""

    def __init__(self, target: str, *, limit: int = 100, max_wait: float = 0.2,
                 metrics: ServiceMetrics | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.metrics = metrics or ServiceMetrics()
        self.target = target
        self.limit = limit
        self.max_wait = max_wait
        self.in_flight = 0
        self.rejected = 0
        self._slots = asyncio.Semaphore(limit)
        self._in_flight_series = self.metrics.bulkhead_in_flight.labels(target)
        self._in_flight_series.inc(0)  # the series exists from the start

    async def acquire(self, wait: float | None = None) -> None:
        wait = self.max_wait if wait is None else min(wait, self.max_wait)
        if not self._slots.locked():
            await self._slots.acquire()  # a free slot: returns at once
        elif wait <= 0:
            self._reject()
        else:
            try:
                async with asyncio.timeout(wait):
                    await self._slots.acquire()
            except TimeoutError:
                self._reject()
        self.in_flight += 1
        self._in_flight_series.inc()

    def release(self) -> None:
        self.in_flight -= 1
        self._in_flight_series.dec()
        self._slots.release()

    def _reject(self) -> None:
        self.rejected += 1
        self.metrics.bulkhead_rejected.labels(self.target).inc()
        raise BulkheadFull(self.target, f"{self.limit} calls in flight")

    def snapshot(self) -> dict[str, Any]:
        return {"target": self.target, "limit": self.limit, "in_flight": self.in_flight, "rejected": self.rejected}


class RetryBudget:
    """Retries may add at most ``ratio`` on top of first attempts, over the last
    ``window_seconds``: each first attempt deposits ``ratio`` of a token, each retry spends one.
    A reserve of ``min_retries`` per window lets a client that makes few calls still retry
    (otherwise its first retry would always be refused). Deposits and spends expire with the
    window, kept in ``slices`` time buckets so memory does not grow with the call rate (the
    window slides by one slice at a time)."""

    def __init__(
        self,
        target: str,
        *,
        ratio: float = 0.2,
        window_seconds: float = 10.0,
        min_retries: int = 10,
        slices: int = 10,
        clock: Clock = time.monotonic,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.metrics = metrics or ServiceMetrics()
        self.target = target
        self.ratio = ratio
        self.window_seconds = window_seconds
        self.min_retries = min_retries
        self.clock = clock
        self._slices = slices
        self._slice_seconds = window_seconds / slices
        self._buckets: deque[list[int]] = deque()  # [slice number, first attempts, retries], oldest first
        self.denied = 0
        self.metrics.retry_budget_denied.labels(target).inc(0)

    def deposit(self) -> None:
        """A first attempt is made."""
        self._bucket()[1] += 1

    def try_spend(self) -> bool:
        """Whether one retry may be made now (and if so, it is counted)."""
        if self.balance() < 1:
            self.denied += 1
            self.metrics.retry_budget_denied.labels(self.target).inc()
            return False
        self._bucket()[2] += 1
        return True

    def balance(self) -> float:
        self._expire()
        first = sum(bucket[1] for bucket in self._buckets)
        retries = sum(bucket[2] for bucket in self._buckets)
        return self.min_retries + self.ratio * first - retries

    def _bucket(self) -> list[int]:
        now = int(self.clock() // self._slice_seconds)
        self._expire()
        if not self._buckets or self._buckets[-1][0] != now:
            self._buckets.append([now, 0, 0])
        return self._buckets[-1]

    def _expire(self) -> None:
        oldest = int(self.clock() // self._slice_seconds) - self._slices + 1
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()

    def snapshot(self) -> dict[str, Any]:
        return {"target": self.target, "balance": self.balance(), "denied": self.denied}
