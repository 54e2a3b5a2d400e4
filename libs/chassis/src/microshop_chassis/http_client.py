"""The client every service uses to call another: aiohttp over the service's one pooled session.

Each call has a deadline (the smaller of its own timeout and what is left of the incoming
request's), carries ``traceparent``, ``X-Request-ID`` and the service's bearer token, and is
retried with capped exponential backoff and full jitter only when repeating it is safe: reads,
and writes that carry an idempotency key (``idempotent=True``).

Each client also guards its one target (see ``resilience``): a circuit breaker (fail fast with
``CircuitOpen`` while the target keeps failing), a bulkhead (a cap on calls in flight,
``BulkheadFull`` beyond it) and a retry budget (retries add at most 20 % to the load). All three
are on by default; pass ``None`` (or ``False``) to turn one off, or an instance to tune it.

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

from .context import deadline_var, request_id_var
from .downstream import DownstreamError, ServiceUnavailable, UnexpectedReply  # noqa: F401 - re-exported
from .errors import ProblemType
from .metrics import ServiceMetrics
from .resilience import Bulkhead, BulkheadFull, CircuitBreaker, CircuitOpen, RetryBudget
from .telemetry import inject_headers

log = structlog.get_logger("microshop.http_client")

_RETRYABLE_STATUS = {502, 503, 504}
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}

class HttpSession:
    """A service's one pooled aiohttp session: created on first use (inside the event loop),
    closed by its owner when the service stops. Every client of the service shares it."""

    def __init__(self, *, limit: int = 512, limit_per_host: int = 128) -> None:
        self.limit = limit
        self.limit_per_host = limit_per_host
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limit, limit_per_host=self.limit_per_host,
                                               ttl_dns_cache=300),
                json_serialize=json.dumps,
            )
        return self._session

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
        return UnexpectedReply(target, self.status, str(detail))


TokenProvider = Callable[[], Awaitable[str]]


class ServiceClient:
    def __init__(
        self,
        target: str,
        base_url: str,
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
    ) -> None:
        """Built on its own (in a test) the client has a session of its own: ``close()`` it."""
        self.session = session or HttpSession()
        self.metrics = metrics = metrics or ServiceMetrics()
        self.target = target
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.token_provider = token_provider
        self.token_refresh = token_refresh
        # True: this target's own, with the defaults; None/False: off; an instance: that one.
        self.breaker = CircuitBreaker(target, metrics=metrics) if breaker is True else breaker or None
        self.bulkhead = Bulkhead(target, metrics=metrics) if bulkhead is True else bulkhead or None
        self.retry_budget = RetryBudget(target, metrics=metrics) if retry_budget is True else retry_budget or None

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
        deadline = _deadline(timeout or self.timeout)
        refreshed_token = False
        attempt = 0
        last: Reply | ServiceUnavailable | None = None  # outcome of the previous attempt
        if self.retry_budget:
            self.retry_budget.deposit()
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceUnavailable(self.target, "deadline exceeded")
            try:
                reply = await self._guarded(method, path, json_body, params, headers, deadline)
            except (CircuitOpen, BulkheadFull):
                # Rejected before sending. On a retry, what the caller should see is what the
                # target last did, not "not even attempted".
                if isinstance(last, Reply):
                    return last
                if last is not None:
                    raise last from last.__cause__  # keep what made it unavailable
                raise
            except ServiceUnavailable as exc:
                if attempt >= attempts or not self._may_retry():
                    raise
                last = exc
                await _backoff(attempt, deadline)
                continue
            if reply.status == 401 and self.token_refresh and not refreshed_token:
                self.token_refresh()  # the cached service token expired or the keys rotated
                refreshed_token = True
                attempt -= 1
                continue
            if reply.status in _RETRYABLE_STATUS and attempt < attempts and self._may_retry():
                last = reply
                await _backoff(attempt, deadline)
                continue
            return reply

    def _may_retry(self) -> bool:
        """Whether a retry is worth making: not while the circuit would reject it anyway (and
        then without spending the budget), and only within the retry budget."""
        if self.breaker and self.breaker.would_reject():
            return False
        return self.retry_budget.try_spend() if self.retry_budget else True

    async def _guarded(self, method, path, json_body, params, extra_headers, deadline: float) -> Reply:
        """One attempt through the circuit breaker and the bulkhead. The breaker counts
        ``ServiceUnavailable`` (unreachable, timed out) and 5xx replies as failures; 4xx are
        successes: the target is alive and answering."""
        permit = self.breaker.acquire() if self.breaker else None  # CircuitOpen
        failed: bool | None = None  # None: no verdict (not sent, or cancelled)
        try:
            if self.bulkhead:
                await self.bulkhead.acquire(deadline - time.monotonic())  # BulkheadFull
            try:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ServiceUnavailable(self.target, "deadline exceeded")
                try:
                    reply = await self._once(method, path, json_body, params, extra_headers, remaining)
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

    async def _once(self, method, path, json_body, params, extra_headers, remaining: float) -> Reply:
        headers = {"X-Request-Timeout": f"{remaining:.3f}"}
        request_id = request_id_var.get()
        if request_id:
            headers["X-Request-ID"] = request_id
        inject_headers(headers)
        if extra_headers:
            headers.update(extra_headers)
        start = time.perf_counter()
        outcome = "error"
        try:
            if self.token_provider:  # inside the try: users being down makes the callee unreachable
                headers["Authorization"] = f"Bearer {await self.token_provider()}"
            async with self.session.get().request(
                method,
                self.base_url + path,
                json=json_body,
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=remaining),
            ) as response:
                raw = await response.read()
                outcome = str(response.status)
                content_type = response.headers.get("Content-Type", "")
                body: Any = json.loads(raw) if raw and "json" in content_type else raw.decode(errors="replace")
                return Reply(response.status, body, CIMultiDict(response.headers))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            outcome = "timeout" if isinstance(exc, TimeoutError) else "unreachable"
            raise ServiceUnavailable(self.target, f"{type(exc).__name__}: {exc}") from exc
        finally:
            self.metrics.client_requests.labels(self.target, method, outcome).inc()
            self.metrics.client_duration.labels(self.target, method).observe(time.perf_counter() - start)


def _deadline(timeout: float) -> float:
    own = time.monotonic() + timeout
    inherited = deadline_var.get()
    return min(own, inherited) if inherited is not None else own


async def _backoff(attempt: int, deadline: float, base: float = 0.05, cap: float = 1.0) -> None:
    """Full jitter (AWS architecture blog): sleep uniformly in [0, min(cap, base * 2^attempt)]."""
    delay = random.uniform(0, min(cap, base * 2**attempt))
    await asyncio.sleep(max(0.0, min(delay, deadline - time.monotonic())))
