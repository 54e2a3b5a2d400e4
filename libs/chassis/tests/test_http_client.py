"""ServiceClient against tiny real aiohttp servers: retries, deadlines, headers, token refresh."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from microshop_chassis.context import deadline_var, outliving_the_request, request_id_var
from microshop_chassis.http_client import CUT_BY_CALLER, ServiceClient, ServiceUnavailable
from microshop_chassis.metrics import ServiceMetrics
from microshop_chassis.resilience import CircuitBreaker, DeadlineExceeded, RetryBudget
from microshop_chassis.telemetry import tracer
from microshop_chassis.testing import free_port

# Every client these tests build reports here; each test's target name is its own.
METRICS = ServiceMetrics()


class Script:
    """A handler answering with the given statuses in turn (the last one repeats), recording
    each request's headers."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.headers))
        status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
        return web.json_response({"attempt": len(self.requests)}, status=status)


@pytest.fixture
def slow():
    """A handler that answers only when the test ends (a server slower than any deadline)."""
    release = asyncio.Event()
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        await release.wait()
        return web.json_response({})

    handler.seen = seen  # type: ignore[attr-defined]
    yield handler
    release.set()


async def test_get_is_retried_on_503_then_succeeds(http_server, http_session):
    script = Script(503, 200)
    url = await http_server([web.get("/things", script.handle)])
    reply = await ServiceClient("things", url, retries=2, session=http_session, metrics=METRICS).get("/things")
    assert reply.status == 200 and reply.ok
    assert reply.body == {"attempt": 2}
    assert len(script.requests) == 2


async def test_get_gives_up_after_the_retries(http_server, http_session):
    script = Script(503)
    url = await http_server([web.get("/things", script.handle)])
    reply = await ServiceClient("things", url, retries=2, session=http_session, metrics=METRICS).get("/things")
    assert reply.status == 503 and not reply.ok
    assert len(script.requests) == 3


async def test_a_call_can_ask_for_fewer_retries_than_the_client(http_server, http_session):
    script = Script(503)
    url = await http_server([web.get("/things", script.handle)])
    client = ServiceClient("things", url, retries=2, session=http_session, metrics=METRICS)
    reply = await client.get("/things", retries=1)
    assert reply.status == 503 and len(script.requests) == 2
    reply = await client.get("/things", retries=0)
    assert len(script.requests) == 3  # one more request: no retry at all


async def test_post_is_not_retried_unless_idempotent(http_server, http_session):
    plain = Script(503, 201)
    keyed = Script(503, 503, 201)
    url = await http_server([web.post("/plain", plain.handle), web.post("/keyed", keyed.handle)])
    client = ServiceClient("things", url, retries=2, session=http_session, metrics=METRICS)

    reply = await client.post("/plain", json_body={"a": 1})
    assert reply.status == 503
    assert len(plain.requests) == 1  # its outcome is unknown: repeating might do it twice

    reply = await client.post("/keyed", json_body={"a": 1}, idempotent=True)
    assert reply.status == 201
    assert len(keyed.requests) == 3


async def test_connection_refused_is_service_unavailable_after_retries(unique, http_session):
    client = ServiceClient(unique, f"http://127.0.0.1:{free_port()}", retries=2, timeout=5, session=http_session,
                           metrics=METRICS)
    with pytest.raises(ServiceUnavailable) as caught:
        await client.get("/anything")
    assert caught.value.target == unique
    attempts = METRICS.value(
        "http_client_requests_total", {"target": unique, "method": "GET", "outcome": "unreachable"}
    )
    assert attempts == 3


async def test_slow_server_beyond_the_timeout_is_service_unavailable(http_server, slow, http_session):
    url = await http_server([web.get("/slow", slow)])
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        await ServiceClient("slow", url, timeout=0.3, session=http_session, metrics=METRICS).get("/slow")
    assert time.monotonic() - started < 3  # bounded by the deadline, not by the server
    assert slow.seen, "the request reached the server"
    assert 0 < float(slow.seen[0]["X-Request-Timeout"]) <= 0.3


async def test_per_call_timeout_overrides_the_client_default(http_server, slow, http_session):
    url = await http_server([web.get("/slow", slow)])
    with pytest.raises(ServiceUnavailable):
        await ServiceClient("slow", url, timeout=30, session=http_session, metrics=METRICS).get("/slow", timeout=0.2)
    assert float(slow.seen[0]["X-Request-Timeout"]) <= 0.2


async def test_inherited_deadline_shortens_the_call(http_server, slow, http_session):
    url = await http_server([web.get("/slow", slow)])
    token = deadline_var.set(time.monotonic() + 0.3)  # what is left of the caller's request
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await ServiceClient("slow", url, timeout=30, session=http_session, metrics=METRICS).get("/slow")
        assert time.monotonic() - started < 3
    finally:
        deadline_var.reset(token)
    assert 0 < float(slow.seen[0]["X-Request-Timeout"]) <= 0.3


class CallerDeadline:
    """``with CallerDeadline(seconds):`` what is left of the request the client's caller serves."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        self._token = deadline_var.set(time.monotonic() + self.seconds)

    def __exit__(self, *exc) -> None:
        deadline_var.reset(self._token)


def guarded_client(target: str, url: str, session, **options) -> ServiceClient:
    """A client whose breaker opens after two failures, so one wrong count would show."""
    breaker = CircuitBreaker(target, window=4, min_calls=2, failure_rate=0.5, metrics=METRICS)
    return ServiceClient(target, url, session=session, metrics=METRICS, breaker=breaker, **options)


def outcomes(target: str, method: str = "GET") -> dict[str, float]:
    found = {}
    for outcome in ("timeout", CUT_BY_CALLER, "200", "503"):
        value = METRICS.value("http_client_requests_total", {"target": target, "method": method, "outcome": outcome})
        if value:
            found[outcome] = value
    return found


async def test_a_call_cut_short_by_the_callers_deadline_is_no_failure_of_the_target(
        http_server, slow, http_session, unique):
    url = await http_server([web.get("/slow", slow)])
    client = guarded_client(unique, url, http_session, timeout=5, retries=2)
    for _ in range(3):
        with CallerDeadline(0.1), pytest.raises(DeadlineExceeded):
            await client.get("/slow")
    snapshot = client.breaker.snapshot()
    assert snapshot["state"] == "closed" and snapshot["calls_in_window"] == 0
    assert len(slow.seen) == 3  # a GET, yet not retried: the caller's time is up
    assert outcomes(unique) == {CUT_BY_CALLER: 3}


async def test_a_timeout_at_the_clients_own_timeout_counts_against_the_target(
        http_server, slow, http_session, unique):
    url = await http_server([web.get("/slow", slow)])
    client = guarded_client(unique, url, http_session, timeout=0.1, retries=0)
    for _ in range(2):
        with CallerDeadline(30), pytest.raises(ServiceUnavailable) as caught:  # the caller has time
            await client.get("/slow")
        assert not isinstance(caught.value, DeadlineExceeded)
    assert client.breaker.snapshot()["state"] == "open"
    assert outcomes(unique) == {"timeout": 2}


async def test_a_callers_deadline_a_hair_shorter_than_the_timeout_still_counts_a_timeout(
        http_server, slow, http_session, unique):
    # orders gives payments 10 s and payments gives the processor 10 s: a processor that hangs
    # must still open payments' breaker.
    url = await http_server([web.get("/slow", slow)])
    client = guarded_client(unique, url, http_session, timeout=0.2, retries=0)
    for _ in range(2):
        with CallerDeadline(0.195), pytest.raises(ServiceUnavailable) as caught:
            await client.get("/slow")
        assert not isinstance(caught.value, DeadlineExceeded)
    assert client.breaker.snapshot()["state"] == "open"


async def test_a_call_whose_callers_deadline_has_passed_is_not_sent(http_server, http_session, unique):
    script = Script(200)
    url = await http_server([web.get("/things", script.handle)])
    budget = RetryBudget(unique, metrics=METRICS)
    client = guarded_client(unique, url, http_session, retry_budget=budget)
    with CallerDeadline(-0.01), pytest.raises(DeadlineExceeded):
        await client.get("/things")
    assert script.requests == []
    assert client.breaker.snapshot()["calls_in_window"] == 0
    assert budget.balance() == budget.min_retries  # no deposit for a call that added no load
    assert outcomes(unique) == {CUT_BY_CALLER: 1}


async def test_a_retry_cut_short_by_the_callers_deadline_answers_what_the_target_did(http_server, http_session):
    release = asyncio.Event()
    calls = []

    async def busy_then_slow(request: web.Request) -> web.Response:
        calls.append(request)
        if len(calls) > 1:
            await release.wait()
        return web.json_response({}, status=503)

    url = await http_server([web.get("/busy", busy_then_slow)])
    client = ServiceClient("busy", url, timeout=5, retries=2, session=http_session, metrics=METRICS)
    try:
        with CallerDeadline(0.5):
            reply = await client.get("/busy")
    finally:
        release.set()
    assert reply.status == 503 and len(calls) == 2


async def test_work_outliving_the_request_keeps_its_id_but_not_its_deadline():
    seen = {}

    async def task_body() -> None:
        seen.update(deadline=deadline_var.get(), request_id=request_id_var.get())

    request_token = request_id_var.set("req-outliving")
    try:
        with CallerDeadline(0.05):
            await asyncio.create_task(task_body(), context=outliving_the_request())
            assert deadline_var.get() is not None  # the request's own context is untouched
    finally:
        request_id_var.reset(request_token)
    assert seen == {"deadline": None, "request_id": "req-outliving"}


async def test_request_id_and_traceparent_are_sent(http_server, span_exporter, http_session):
    script = Script(200)
    url = await http_server([web.get("/things", script.handle)])
    token = request_id_var.set("req-abc-123")
    try:
        with tracer("chassis-tests").start_as_current_span("caller") as span:
            await ServiceClient("things", url, session=http_session, metrics=METRICS).get("/things")
            trace_id = format(span.get_span_context().trace_id, "032x")
            span_id = format(span.get_span_context().span_id, "016x")
    finally:
        request_id_var.reset(token)
    headers = script.requests[0]
    assert headers["X-Request-ID"] == "req-abc-123"
    version, sent_trace, sent_parent, _flags = headers["traceparent"].split("-")
    # The callee's parent is the call's own client span, a child of the caller's span.
    client_span = next(s for s in span_exporter.get_finished_spans()
                       if format(s.context.span_id, "016x") == sent_parent)
    assert (version, sent_trace) == ("00", trace_id)
    assert client_span.name == "GET things" and client_span.kind.name == "CLIENT"
    assert format(client_span.parent.span_id, "016x") == span_id
    assert client_span.attributes["http.response.status_code"] == 200


async def test_401_refreshes_the_token_once_and_uses_the_new_one(http_server, http_session):
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer token-2":
            return web.json_response({"detail": "expired"}, status=401)
        return web.json_response({"ok": True})

    url = await http_server([web.post("/charge", handler)])
    generation = [1]
    refreshes: list[int] = []

    async def token_provider() -> str:
        return f"token-{generation[0]}"

    def token_refresh() -> None:
        refreshes.append(generation[0])
        generation[0] += 1

    client = ServiceClient("payments", url, token_provider=token_provider, token_refresh=token_refresh,
                           session=http_session, metrics=METRICS)
    reply = await client.post("/charge", json_body={})  # not idempotent: a 401 did nothing, so it is repeated
    assert reply.status == 200
    assert seen == ["Bearer token-1", "Bearer token-2"]
    assert refreshes == [1]


async def test_a_second_401_is_returned_not_looped_on(http_server, http_session):
    script = Script(401)
    url = await http_server([web.get("/things", script.handle)])
    refreshes: list[None] = []

    async def token_provider() -> str:
        return "token"

    client = ServiceClient("things", url, token_provider=token_provider,
                           token_refresh=lambda: refreshes.append(None), session=http_session, metrics=METRICS)
    reply = await client.get("/things")
    assert reply.status == 401
    assert len(refreshes) == 1
    assert len(script.requests) == 2


async def test_reply_headers_are_case_insensitive(http_server, http_session):
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({}, headers={"X-Custom-Thing": "value", "ETag": '"v1"'})

    url = await http_server([web.get("/things", handler)])
    reply = await ServiceClient("things", url, session=http_session, metrics=METRICS).get("/things")
    assert reply.headers["x-custom-thing"] == "value"
    assert reply.headers["X-CUSTOM-THING"] == "value"
    assert reply.headers["etag"] == '"v1"'


async def test_json_bodies_and_text_bodies(http_server, http_session):
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"got": await request.json(), "q": request.query.get("q")})

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="plain words")

    url = await http_server([web.put("/echo", echo), web.get("/text", text)])
    client = ServiceClient("things", url, session=http_session, metrics=METRICS)
    reply = await client.put("/echo", json_body={"n": 1}, params={"q": "x"})
    assert reply.body == {"got": {"n": 1}, "q": "x"}
    assert (await client.get("/text")).body == "plain words"
