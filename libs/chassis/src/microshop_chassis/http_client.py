"""The client every service uses to call another: aiohttp over the service's one pooled session.

Each call has a deadline (the smaller of its own timeout and what is left of the incoming
request's), carries ``traceparent``, ``X-Request-ID`` and the service's bearer token, and is
retried with capped exponential backoff and full jitter only when repeating it is safe: reads,
and writes that carry an idempotency key (``idempotent=True``).

Each client also guards its one target (see ``resilience``): a circuit breaker (fail fast with
``CircuitOpen`` while the target keeps failing), a bulkhead (a cap on calls in flight,
``BulkheadFull`` beyond it) and a retry budget (retries add at most 20 % to the load). All three
are on by default; pass ``None`` (or ``False``) to turn one off, or an instance to tune it.

A call that runs out of the *caller's* time (what is left of the request it serves, when that
cuts the client's own timeout short) is the caller's doing, not the target's: it raises
``DeadlineExceeded``, is not retried, counts neither way in the breaker, and shows as the outcome
``deadline_exceeded_by_caller`` in ``http_client_requests_total``. A call whose caller's deadline
has passed already is not sent at all. Only a timeout after (about) the client's own timeout
counts against the target: otherwise any client sending a tiny ``X-Request-Timeout`` could open
the circuit every customer shares.

The target may have several replicas (``discovery``): each attempt goes to one of the live ones,
and a replica that could not be reached is not chosen again for a while. A retry goes to another
replica than the one that failed when there is one, and without the backoff (a dead replica says
nothing of the others). A request refused at connect never reached anyone, so even one that is not
safe to repeat is sent to another replica.

A technical failure is one of the ``downstream`` family (``ServiceUnavailable``); any answer, even
a 5xx after the retries, comes back as a ``Reply`` for the caller's adapter to judge.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from multidict import CIMultiDict
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .context import deadline_var, request_id_var
from .discovery import Endpoints, FixedEndpoint
from .downstream import DownstreamError, ServiceUnavailable, UnexpectedReply  # noqa: F401 - re-exported
from .errors import ProblemType
from .in_process import InProcessSession, LocalApps
from .metrics import ServiceMetrics
from .resilience import Bulkhead, BulkheadFull, CircuitBreaker, CircuitOpen, DeadlineExceeded, RetryBudget
from .telemetry import inject_headers, tracer

log = structlog.get_logger("microshop.http_client")

_RETRYABLE_STATUS = {502, 503, 504}
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}
# The ``outcome`` of a call cut short (or not sent) because the caller's own deadline ran out.
CUT_BY_CALLER = "deadline_exceeded_by_caller"
# A timeout counts against the target when the caller's deadline left it at least this share of
# the client's own timeout.
_FAIR_SHARE = 0.9
# Failovers to another replica a call makes beyond its retries (requests that reached no one).
_MAX_FAILOVERS = 3

class HttpSession:
    """A service's one pooled aiohttp session: created on first use (inside the event loop),
    closed by its owner when the service stops. Every client of the service shares it.

    In a process that serves several services (the monolith), ``serve_in_process`` names them:
    calls to those go to their apps directly (in_process.py), everything else over the network."""

    def __init__(self, *, limit: int = 512, limit_per_host: int = 128) -> None:
        self.limit = limit
        self.limit_per_host = limit_per_host
        self._session: aiohttp.ClientSession | None = None
        self._local: LocalApps | None = None
        self._in_process: InProcessSession | None = None

    def serve_in_process(self, apps: LocalApps) -> None:
        self._local = apps

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limit, limit_per_host=self.limit_per_host,
                                               ttl_dns_cache=300),
                json_serialize=json.dumps,
            )
            self._in_process = InProcessSession(self._session, self._local) if self._local else None
        # Shaped like a ClientSession in what the chassis calls (request, get, post).
        return self._in_process or self._session  # type: ignore[return-value]

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: CIMultiDict  # case-insensitive, as HTTP header names are

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def is_problem(self, *problem_types: ProblemType) -> bool:
        """Whether this answer is a problem of one of these (declared) types."""
        return any(problem_type.matches(self.status, self.body) for problem_type in problem_types)

    def unexpected(self, target: str) -> UnexpectedReply:
        """The error to raise for an answer outside the protocol: its status and what it said."""
        body = self.body if isinstance(self.body, dict) else {}
        detail = body.get("detail") or body.get("type") or "no detail"
        title = body.get("title")
        return UnexpectedReply(target, self.status, str(detail), title=title if isinstance(title, str) else None)


TokenProvider = Callable[[], Awaitable[str]]


class ServiceClient:
    def __init__(
        self,
        target: str,
        base_url: str | Endpoints,
        *,
        session: HttpSession | None = None,
        metrics: ServiceMetrics | None = None,
        timeout: float = 5.0,
        retries: int = 2,
        token_provider: TokenProvider | None = None,
        token_refresh: Callable[[], None] | None = None,
        breaker: CircuitBreaker | bool | None = True,
        bulkhead: Bulkhead | bool | None = True,
        retry_budget: RetryBudget | bool | None = True,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        """Built on its own (in a test) the client has a session of its own: ``close()`` it."""
        self.session = session or HttpSession()
        self.metrics = metrics = metrics or ServiceMetrics()
        self.target = target
        # One address, or the replicas the directory knows (host.endpoints).
        self.endpoints: Endpoints = FixedEndpoint(base_url) if isinstance(base_url, str) else base_url
        self.timeout = timeout
        self.retries = retries
        self.token_provider = token_provider
        self.token_refresh = token_refresh
        # True: this target's own, with the defaults; None/False: off; an instance: that one.
        self.breaker = CircuitBreaker(target, metrics=metrics) if breaker is True else breaker or None
        self.bulkhead = Bulkhead(target, metrics=metrics) if bulkhead is True else bulkhead or None
        self.retry_budget = RetryBudget(target, metrics=metrics) if retry_budget is True else retry_budget or None
        self._tracer = tracer("microshop.http_client", tracer_provider)

    async def close(self) -> None:
        await self.session.close()

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("PUT", path, **kwargs)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Any = None,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> Reply:
        safe = idempotent if idempotent is not None else method in _SAFE_METHODS
        # ``retries`` per call: fewer where someone waits and retries at an outer layer anyway.
        attempts = 1 + ((self.retries if retries is None else retries) if safe else 0)
        deadline = _Deadline.of(timeout or self.timeout)
        if deadline.remaining() <= 0:  # the caller has given up already: do not send it at all
            self.metrics.client_requests.labels(self.target, method, CUT_BY_CALLER).inc()
            raise deadline.exceeded(self.target)
        refreshed_token = False
        attempt = 0
        failed_over = 0
        avoid: set[str] = set()  # replicas that failed this call
        last: Reply | ServiceUnavailable | None = None  # outcome of the previous attempt
        if self.retry_budget:
            self.retry_budget.deposit()  # only for calls sent: one the caller gave up on adds no load
        while True:
            attempt += 1
            if deadline.remaining() <= 0:  # spent on earlier attempts and their backoff
                if last is None:
                    raise deadline.exceeded(self.target)
                return _previous(last)
            try:
                reply = await self._guarded(method, path, json_body, params, headers, deadline, avoid)
            except (CircuitOpen, BulkheadFull, DeadlineExceeded):
                # Not sent, or cut short by the caller's deadline. On a retry, what the caller
                # should see is what the target last did, not "not even attempted".
                if last is None:
                    raise
                return _previous(last)
            except ServiceUnavailable as exc:
                other_replica = exc.replica is not None and self.endpoints.alternatives(avoid | {exc.replica})
                if exc.replica is not None:
                    avoid.add(exc.replica)
                if not exc.sent and other_replica and failed_over < _MAX_FAILOVERS:
                    failed_over += 1  # it reached no one: another replica gets it, whatever it is
                    attempt -= 1
                elif attempt >= attempts or not self._may_retry():
                    raise
                last = exc
                if not other_replica:
                    await _backoff(attempt, deadline.at)
                continue
            if reply.status == 401 and self.token_refresh and not refreshed_token:
                self.token_refresh()  # the cached service token expired or the keys rotated
                refreshed_token = True
                attempt -= 1
                continue
            if reply.status in _RETRYABLE_STATUS and attempt < attempts and self._may_retry():
                last = reply
                await _backoff(attempt, deadline.at)
                continue
            return reply

    def _may_retry(self) -> bool:
        """Whether a retry is worth making: not while the circuit would reject it anyway (and
        then without spending the budget), and only within the retry budget."""
        if self.breaker and self.breaker.would_reject():
            return False
        return self.retry_budget.try_spend() if self.retry_budget else True

    async def _guarded(self, method, path, json_body, params, extra_headers, deadline: _Deadline,
                       avoid: set[str]) -> Reply:
        """One attempt through the circuit breaker and the bulkhead. The breaker counts
        ``ServiceUnavailable`` (unreachable, timed out) and 5xx replies as failures; 4xx are
        successes: the target is alive and answering. A call cut short by the caller's deadline
        (``DeadlineExceeded``) or cancelled gets no verdict."""
        permit = self.breaker.acquire() if self.breaker else None  # CircuitOpen
        failed: bool | None = None  # None: no verdict (not sent, cancelled, or the caller's time ran out)
        try:
            if self.bulkhead:
                await self.bulkhead.acquire(deadline.remaining())  # BulkheadFull
            try:
                if deadline.remaining() <= 0:  # spent waiting for a slot: not sent, no verdict
                    raise deadline.exceeded(self.target)
                try:
                    reply = await self._once(method, path, json_body, params, extra_headers, deadline, avoid)
                except DeadlineExceeded:
                    raise
                except ServiceUnavailable:
                    failed = True
                    raise
                failed = reply.status >= 500
                return reply
            finally:
                if self.bulkhead:
                    self.bulkhead.release()
        finally:
            if self.breaker and permit is not None:
                if failed is None:
                    self.breaker.release(permit)
                else:
                    self.breaker.record(permit, failed=failed)

    async def _once(self, method, path, json_body, params, extra_headers, deadline: _Deadline,
                    avoid: set[str]) -> Reply:
        start = time.perf_counter()
        outcome = "error"
        base_url = self.endpoints.pick(avoid)
        self.endpoints.started(base_url)
        reached = True
        # One client span per attempt: a retry to another replica is its own span in the trace.
        span = self._tracer.start_span(f"{method} {self.target}", kind=SpanKind.CLIENT, attributes={
            "http.request.method": method, "server.address": self.target, "url.full": base_url + path})
        with trace.use_span(span, end_on_exit=True):
            try:
                # Inside the try: users being down makes the callee unreachable.
                token = await self.token_provider() if self.token_provider else None
                remaining = deadline.remaining()  # what fetching the token left
                if remaining <= 0:
                    raise TimeoutError("no time left after fetching the service token")
                headers = {"X-Request-Timeout": f"{remaining:.3f}"}
                request_id = request_id_var.get()
                if request_id:
                    headers["X-Request-ID"] = request_id
                inject_headers(headers)
                if extra_headers:
                    headers.update(extra_headers)
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                async with self.session.get().request(
                    method,
                    base_url + path,
                    json=json_body,
                    params=params,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=remaining),
                ) as response:
                    raw = await response.read()
                    outcome = str(response.status)
                    span.set_attribute("http.response.status_code", response.status)
                    if response.status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                    content_type = response.headers.get("Content-Type", "")
                    body: Any = json.loads(raw) if raw and "json" in content_type else raw.decode(errors="replace")
                    return Reply(response.status, body, CIMultiDict(response.headers))
            except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
                if deadline.by_caller:  # the caller's time ran out, not the client's own timeout
                    outcome = CUT_BY_CALLER
                    raise DeadlineExceeded(self.target, "the caller's deadline ran out during the call") from exc
                outcome = "timeout"
                raise ServiceUnavailable(self.target, f"{type(exc).__name__}: {exc}") from exc
            except (aiohttp.ClientError, OSError) as exc:
                outcome = "unreachable"
                unavailable = ServiceUnavailable(self.target, f"{type(exc).__name__}: {exc}")
                unavailable.replica = base_url
                # Refused at connect: the request never left. Reset or cut off: it may have arrived.
                unavailable.sent = not isinstance(exc, aiohttp.ClientConnectorError)
                reached = not isinstance(exc, aiohttp.ClientConnectionError | OSError)
                raise unavailable from exc
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            finally:
                if outcome in ("timeout", "unreachable", CUT_BY_CALLER):
                    span.set_status(Status(StatusCode.ERROR, outcome))
                self.endpoints.finished(base_url, reached=reached)
                metrics = self.metrics
                metrics.series(metrics.client_requests, self.target, method, outcome).inc()
                metrics.series(metrics.client_duration, self.target, method).observe(time.perf_counter() - start)


@dataclass(frozen=True)
class _Deadline:
    """When a call must be over, and whose deadline that is: the caller's (what is left of the
    request it serves, when that cuts the client's own timeout short) or the client's own."""

    at: float  # time.monotonic()
    by_caller: bool

    @classmethod
    def of(cls, timeout: float) -> _Deadline:
        now = time.monotonic()
        inherited = deadline_var.get()
        if inherited is None or inherited >= now + timeout:
            return cls(now + timeout, by_caller=False)
        # A caller's deadline a hair shorter than the client's timeout still gave the target its
        # chance: orders gives payments 10 s and payments the processor 10 s, and a processor that
        # hangs must still open payments' breaker.
        return cls(inherited, by_caller=inherited - now < _FAIR_SHARE * timeout)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def exceeded(self, target: str) -> ServiceUnavailable:
        if self.by_caller:
            return DeadlineExceeded(target, "the caller's deadline passed")
        return ServiceUnavailable(target, "deadline exceeded")


def _previous(last: Reply | ServiceUnavailable) -> Reply:
    """What the target did on the previous attempt: its answer, or the failure, raised again."""
    if isinstance(last, Reply):
        return last
    raise last from last.__cause__  # keep what made it unavailable


async def _backoff(attempt: int, deadline: float, base: float = 0.05, cap: float = 1.0) -> None:
    """Full jitter (AWS architecture blog): sleep uniformly in [0, min(cap, base * 2^attempt)]."""
    delay = random.uniform(0, min(cap, base * 2**attempt))
    await asyncio.sleep(max(0.0, min(delay, deadline - time.monotonic())))
