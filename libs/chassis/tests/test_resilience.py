"""Circuit breaker, bulkhead and retry budget, through ServiceClient against tiny real aiohttp
servers. Time is a fake clock the tests advance; concurrency is synchronised with events, never
with sleeps."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from microshop_chassis.http_client import ServiceClient, ServiceUnavailable
from microshop_chassis.metrics import ServiceMetrics
from microshop_chassis.resilience import (
    Bulkhead,
    BulkheadFull,
    CircuitBreaker,
    CircuitOpen,
    RetryBudget,
    State,
)
from microshop_chassis.testing import free_port
from prometheus_client import generate_latest

# Every client and guard these tests build reports here; each test's target name is its own.
METRICS = ServiceMetrics()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Target:
    """A handler answering with ``status`` (changeable), counting the requests it sees."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.seen = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.seen += 1
        return web.json_response({"seen": self.seen}, status=self.status)


class Gate:
    """A handler that holds every request until ``open()``; ``await arrived(n)`` returns once
    n requests are being held."""

    def __init__(self) -> None:
        self.seen = 0
        self._release = asyncio.Event()
        self._arrival = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.seen += 1
        self._arrival.set()
        await self._release.wait()
        return web.json_response({"seen": self.seen})

    async def arrived(self, n: int) -> None:
        async with asyncio.timeout(5):
            while self.seen < n:
                self._arrival.clear()
                await self._arrival.wait()

    def open(self) -> None:
        self._release.set()


@pytest.fixture
async def gate():
    held = Gate()
    yield held
    held.open()  # never leave a request hanging past the test


def breaker_state(target: str) -> float | None:
    return METRICS.value("circuit_breaker_state", {"target": target})


def client(target: str, url: str, clock: FakeClock, session, **kwargs) -> ServiceClient:
    """No retries and no retry budget unless asked: one call is one attempt at the server."""
    kwargs.setdefault("retries", 0)
    kwargs.setdefault("retry_budget", None)
    kwargs.setdefault("breaker", CircuitBreaker(target, window=20, min_calls=10, failure_rate=0.5,
                                                open_seconds=5, half_open_calls=1, clock=clock, metrics=METRICS))
    return ServiceClient(target, url, session=session, metrics=METRICS, **kwargs)


# --- circuit breaker --------------------------------------------------------------------------


async def _open_the_circuit(http: ServiceClient, target: Target) -> None:
    for _ in range(10):  # min_calls, all failing
        assert (await http.get("/x")).status == 503
    assert target.seen == 10
    assert http.breaker.state is State.OPEN


async def test_breaker_opens_on_5xx_and_then_fails_fast_without_calling(http_server, unique, http_session):
    target = Target(503)
    url = await http_server([web.get("/x", target.handle)])
    http = client(unique, url, FakeClock(), http_session)
    assert breaker_state(unique) == 0
    await _open_the_circuit(http, target)
    assert breaker_state(unique) == 2

    for _ in range(5):
        with pytest.raises(CircuitOpen) as caught:
            await http.get("/x")
        assert isinstance(caught.value, ServiceUnavailable)  # existing callers handle it already
        assert caught.value.target == unique
    assert target.seen == 10  # the server saw none of them
    assert METRICS.value("circuit_breaker_rejected_total", {"target": unique}) == 5
    assert http.breaker.snapshot()["state"] == "open"


async def test_breaker_opens_when_the_target_is_unreachable(unique, http_session):
    http = client(unique, f"http://127.0.0.1:{free_port()}", FakeClock(), http_session)
    for _ in range(10):
        with pytest.raises(ServiceUnavailable) as caught:
            await http.get("/x")
        assert not isinstance(caught.value, CircuitOpen)
    with pytest.raises(CircuitOpen):
        await http.get("/x")


async def test_breaker_needs_the_failure_rate_over_enough_calls(http_server, unique, http_session):
    target = Target(503)
    url = await http_server([web.get("/x", target.handle)])
    http = client(unique, url, FakeClock(), http_session)
    for _ in range(9):  # all failing, but fewer than min_calls
        await http.get("/x")
    assert http.breaker.state is State.CLOSED
    await http.get("/x")
    assert http.breaker.state is State.OPEN

    flaky = Target(200)
    url = await http_server([web.get("/x", flaky.handle)])
    http = client(unique + "b", url, FakeClock(), http_session)
    for i in range(100):  # 40 % failures, below the 50 % threshold: never opens
        flaky.status = 503 if i % 5 in (3, 4) else 200
        await http.get("/x")
    assert http.breaker.state is State.CLOSED and flaky.seen == 100
    flaky.status = 503  # from 8 failures in the last 20, two more make it 50 %
    await http.get("/x")
    assert http.breaker.state is State.CLOSED
    await http.get("/x")
    assert http.breaker.state is State.OPEN


async def test_4xx_replies_do_not_open_the_breaker(http_server, unique, http_session):
    target = Target(404)
    url = await http_server([web.get("/x", target.handle)])
    http = client(unique, url, FakeClock(), http_session)
    for _ in range(30):
        assert (await http.get("/x")).status == 404
    assert target.seen == 30
    assert http.breaker.state is State.CLOSED
    assert breaker_state(unique) == 0


async def test_half_open_after_open_seconds_then_a_success_closes(http_server, unique, http_session):
    target = Target(503)
    url = await http_server([web.get("/x", target.handle)])
    clock = FakeClock()
    http = client(unique, url, clock, http_session)
    await _open_the_circuit(http, target)

    clock.advance(4.9)
    with pytest.raises(CircuitOpen):
        await http.get("/x")
    clock.advance(0.1)
    assert http.breaker.state is State.HALF_OPEN
    assert breaker_state(unique) == 1

    target.status = 200
    assert (await http.get("/x")).status == 200  # the trial call
    assert http.breaker.state is State.CLOSED
    assert breaker_state(unique) == 0
    for _ in range(5):
        assert (await http.get("/x")).status == 200
    assert target.seen == 10 + 1 + 5
    assert http.breaker.snapshot()["calls_in_window"] == 5  # closing started a fresh window


async def test_a_failed_trial_call_reopens_the_circuit(http_server, unique, http_session):
    target = Target(503)
    url = await http_server([web.get("/x", target.handle)])
    clock = FakeClock()
    http = client(unique, url, clock, http_session)
    await _open_the_circuit(http, target)

    clock.advance(5)
    assert (await http.get("/x")).status == 503  # the trial reached the server and failed
    assert target.seen == 11
    assert http.breaker.state is State.OPEN and breaker_state(unique) == 2
    with pytest.raises(CircuitOpen):
        await http.get("/x")
    assert target.seen == 11
    assert http.breaker.snapshot()["open_for_seconds"] == 5  # a full open period again

    clock.advance(5)  # and it can still recover afterwards
    target.status = 200
    assert (await http.get("/x")).status == 200
    assert http.breaker.state is State.CLOSED


async def test_half_open_lets_only_the_trial_calls_through(http_server, unique, gate, http_session):
    target = Target(503)
    url = await http_server([web.get("/x", target.handle), web.get("/held", gate.handle)])
    clock = FakeClock()
    http = client(unique, url, clock, http_session)
    await _open_the_circuit(http, target)
    clock.advance(5)

    trial = asyncio.create_task(http.get("/held"))
    await gate.arrived(1)
    with pytest.raises(CircuitOpen):  # half_open_calls=1 and one is in flight
        await http.get("/x")
    assert target.seen == 10
    gate.open()
    assert (await trial).status == 200
    assert http.breaker.state is State.CLOSED


def test_a_late_result_from_before_the_circuit_opened_is_ignored():
    clock = FakeClock()
    breaker = CircuitBreaker("late-result", window=4, min_calls=2, clock=clock, metrics=METRICS)
    slow_call = breaker.acquire()
    for _ in range(2):
        breaker.record(breaker.acquire(), failed=True)
    assert breaker.state is State.OPEN
    breaker.record(slow_call, failed=False)  # admitted while closed: no verdict on "open"
    assert breaker.state is State.OPEN


async def test_a_retry_is_not_made_into_an_open_circuit(http_server, unique, http_session):
    target = Target(503)
    url = await http_server([web.get("/x", target.handle)])
    breaker = CircuitBreaker(unique, window=2, min_calls=2, clock=FakeClock(), metrics=METRICS)
    http = ServiceClient(unique, url, retries=5, breaker=breaker, retry_budget=None, session=http_session,
                         metrics=METRICS)
    reply = await http.get("/x")  # the second attempt opens the circuit
    assert reply.status == 503  # what the target said, not "not even attempted"
    assert target.seen == 2
    with pytest.raises(CircuitOpen):
        await http.get("/x")


# --- bulkhead ---------------------------------------------------------------------------------


async def test_bulkhead_rejects_the_call_over_the_limit_fast(http_server, unique, gate, http_session):
    url = await http_server([web.get("/held", gate.handle)])
    http = ServiceClient(unique, url, bulkhead=Bulkhead(unique, limit=2, max_wait=0.05, metrics=METRICS),
                         session=http_session, metrics=METRICS)
    first = asyncio.create_task(http.get("/held"))
    second = asyncio.create_task(http.get("/held"))
    await gate.arrived(2)
    assert METRICS.value("bulkhead_in_flight", {"target": unique}) == 2

    started = time.monotonic()
    with pytest.raises(BulkheadFull) as caught:
        await http.get("/held")
    assert time.monotonic() - started < 1  # max_wait, not the 5 s timeout
    assert isinstance(caught.value, ServiceUnavailable)
    assert gate.seen == 2
    assert METRICS.value("bulkhead_rejected_total", {"target": unique}) == 1

    gate.open()
    assert [r.status for r in await asyncio.gather(first, second)] == [200, 200]
    assert METRICS.value("bulkhead_in_flight", {"target": unique}) == 0
    assert http.breaker.snapshot()["calls_in_window"] == 2  # a local rejection is no verdict on the target


async def test_bulkhead_call_waiting_within_max_wait_gets_the_freed_slot(http_server, unique, gate, http_session):
    url = await http_server([web.get("/held", gate.handle)])
    http = ServiceClient(unique, url, bulkhead=Bulkhead(unique, limit=1, max_wait=5, metrics=METRICS),
                         session=http_session, metrics=METRICS)
    first = asyncio.create_task(http.get("/held"))
    await gate.arrived(1)
    waiting = asyncio.create_task(http.get("/held"))
    await asyncio.sleep(0)  # let it start waiting (an ordering nudge, not a timed wait)
    assert gate.seen == 1
    gate.open()
    assert (await first).status == 200
    assert (await waiting).status == 200
    assert gate.seen == 2


# --- retry budget -----------------------------------------------------------------------------


async def test_retry_budget_stops_retries_during_a_sustained_outage(http_server, unique, http_session):
    target = Target(503)
    url = await http_server([web.get("/x", target.handle)])
    clock = FakeClock()
    budget = RetryBudget(unique, ratio=0.2, window_seconds=10, min_retries=2, clock=clock, metrics=METRICS)
    http = ServiceClient(unique, url, retries=2, breaker=None, retry_budget=budget, session=http_session,
                         metrics=METRICS)

    for _ in range(50):
        assert (await http.get("/x")).status == 503  # the last result, retried or not
    # Without the budget: 50 × 3 = 150. With it: 50 first attempts + 2 reserve + 0.2 × 50.
    assert 60 <= target.seen <= 62
    denied = METRICS.value("retry_budget_denied_total", {"target": unique})
    assert denied is not None and denied >= 50 - 12  # each call without a retry was denied once

    clock.advance(10)  # the window slid past all of it: the reserve is back
    seen = target.seen
    await http.get("/x")
    assert target.seen == seen + 3


async def test_retry_budget_denied_raises_the_last_error(unique, http_session):
    budget = RetryBudget(unique, min_retries=0, clock=FakeClock(), metrics=METRICS)
    http = ServiceClient(unique, f"http://127.0.0.1:{free_port()}", retries=2, breaker=None, retry_budget=budget,
                         session=http_session, metrics=METRICS)
    with pytest.raises(ServiceUnavailable) as caught:
        await http.get("/x")
    assert not isinstance(caught.value, (CircuitOpen, BulkheadFull))
    attempts = METRICS.value(
        "http_client_requests_total", {"target": unique, "method": "GET", "outcome": "unreachable"}
    )
    assert attempts == 1  # 0.2 tokens after one first attempt: no retry


def test_retry_budget_slides_with_time():
    clock = FakeClock()
    budget = RetryBudget("sliding", ratio=0.2, window_seconds=10, min_retries=0, clock=clock, metrics=METRICS)
    for _ in range(10):
        budget.deposit()
    assert budget.balance() == pytest.approx(2)
    assert budget.try_spend() and budget.try_spend()
    assert not budget.try_spend()
    clock.advance(5)
    for _ in range(5):
        budget.deposit()
    assert budget.balance() == pytest.approx(1)
    clock.advance(5)  # the first ten deposits and the two retries have left the window
    assert budget.balance() == pytest.approx(1)
    clock.advance(5)
    assert budget.balance() == pytest.approx(0)
    assert budget.snapshot()["denied"] == 1


# --- wiring -----------------------------------------------------------------------------------


async def test_defaults_are_on_and_invisible_when_the_target_is_healthy(http_server, unique, http_session):
    target = Target(200)
    url = await http_server([web.get("/x", target.handle)])
    http = ServiceClient(unique, url, session=http_session, metrics=METRICS)
    assert isinstance(http.breaker, CircuitBreaker)
    assert isinstance(http.bulkhead, Bulkhead)
    assert isinstance(http.retry_budget, RetryBudget)
    replies = await asyncio.gather(*(http.get("/x") for _ in range(50)))
    assert all(r.status == 200 for r in replies) and target.seen == 50
    assert http.breaker.snapshot()["state"] == "closed"
    assert http.bulkhead.snapshot() == {"target": unique, "limit": 100, "in_flight": 0, "rejected": 0}


async def test_each_guard_can_be_turned_off(http_server, unique, http_session):
    target = Target(503)
    url = await http_server([web.get("/x", target.handle)])
    http = ServiceClient(unique, url, breaker=None, bulkhead=False, retry_budget=None, session=http_session,
                         metrics=METRICS)
    assert http.breaker is None and http.bulkhead is None and http.retry_budget is None
    for _ in range(5):
        assert (await http.get("/x")).status == 503
    assert target.seen == 5 * 3  # every retry made; a breaker would have opened after 10 failures


async def test_metrics_are_exposed(http_server, unique, http_session):
    target = Target(200)
    url = await http_server([web.get("/x", target.handle)])
    await ServiceClient(unique, url, session=http_session, metrics=METRICS).get("/x")
    text = generate_latest(METRICS.registry).decode()
    for series in (
        f'circuit_breaker_state{{target="{unique}"}} 0.0',
        f'bulkhead_in_flight{{target="{unique}"}} 0.0',
        f'retry_budget_denied_total{{target="{unique}"}} 0.0',
    ):
        assert series in text
    assert "circuit_breaker_rejected_total" in text and "bulkhead_rejected_total" in text


async def test_health_reports_the_state_of_each_downstream_breaker(http_server, unique, tmp_path, http_session):
    """A service's /health names the state of every breaker it holds, so `microshop status`
    can show which of its downstreams it has given up on for now."""
    from microshop_chassis.app import create_app
    from microshop_chassis.settings import ServiceSettings
    from microshop_chassis.testing import ApiClient, RunningApp

    target = Target(503)
    url = await http_server([web.get("/x", target.handle)])
    http = client(unique, url, FakeClock(), http_session)
    app = create_app(settings=ServiceSettings(service_name="caller", data_dir=tmp_path), version="1",
                     breakers=lambda: [http.breaker])
    async with RunningApp(app) as running:
        before = (await ApiClient(running.url).get("/health")).body
        await _open_the_circuit(http, target)
        after = (await ApiClient(running.url).get("/health")).body
    assert before["circuit_breakers"][unique] == "closed"
    assert after["circuit_breakers"][unique] == "open"
