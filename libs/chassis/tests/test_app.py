"""The app factory, problem+json errors and the edge middleware, over real HTTP (uvicorn)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import pytest
from fastapi import APIRouter
from microshop_chassis.app import create_app
from microshop_chassis.context import deadline_var, request_id_var
from microshop_chassis.errors import PROBLEM_JSON, Problem
from microshop_chassis.settings import ServiceSettings
from microshop_chassis.testing import ApiClient, RunningApp, wait_until
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

SECRET = "connection string postgresql://admin:hunter2@db"


class ThingIn(BaseModel):
    name: str
    quantity: int


def build_app(settings: ServiceSettings, failing: dict[str, bool]):
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict:
        return {"id": item_id}

    @router.post("/things", status_code=201)
    async def create_thing(thing: ThingIn) -> dict:
        return thing.model_dump()

    @router.get("/out-of-stock")
    async def out_of_stock() -> dict:
        raise Problem(409, "Only 2 of sku-1 left.", type="out-of-stock", title="Out of stock", sku="sku-1",
                      available=2, headers={"Retry-After": "7"})

    @router.get("/boom")
    async def boom() -> dict:
        raise RuntimeError(SECRET)

    @router.get("/context")
    async def context() -> dict:
        deadline = deadline_var.get()
        return {
            "request_id": request_id_var.get(),
            "remaining": None if deadline is None else deadline - time.monotonic(),
        }

    async def database() -> None:
        if failing["database"]:
            raise ConnectionError("database is away")

    async def broker() -> None:
        return None

    async def health_extra() -> dict:
        return {"pending": 3}

    return create_app(
        settings=settings, version="9.9.9", routers=[router], readiness={"database": database, "broker": broker},
        health_extra=health_extra,
    )


@pytest.fixture
async def service(tmp_path, unique, span_exporter):
    failing = {"database": False}
    settings = ServiceSettings(service_name=unique, data_dir=tmp_path)
    async with RunningApp(build_app(settings, failing)) as running:
        yield running, failing


async def test_health(service, unique):
    running, _ = service
    reply = await ApiClient(running.url).get("/health")
    assert reply.status == 200
    assert reply.body == {"status": "ok", "service": unique, "version": "9.9.9", "instance": f"{unique}-8000",
                          "pending": 3}


async def test_ready_reports_each_check_and_503_problem_when_one_fails(service):
    running, failing = service
    api = ApiClient(running.url)
    reply = await api.get("/ready")
    assert reply.status == 200
    assert reply.body == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}

    failing["database"] = True
    reply = await api.get("/ready")
    assert reply.status == 503
    assert reply.headers["Content-Type"].startswith(PROBLEM_JSON)
    assert reply.body["status"] == 503
    assert reply.body["type"].startswith("https://")
    assert reply.body["checks"]["broker"] == "ok"
    assert reply.body["checks"]["database"] == "failing: ConnectionError: database is away"


def _metric_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


async def test_metrics_label_requests_by_route_template(service):
    running, _ = service
    api = ApiClient(running.url)
    item = int(uuid.uuid4().int % 10**9)
    assert (await api.get(f"/items/{item}")).status == 200
    assert (await api.get(f"/nowhere/{item}")).status == 404
    text = (await api.get("/metrics")).body
    lines = _metric_lines(text, "http_server_requests_total")
    assert any('route="/items/{item_id}"' in line and 'status="200"' in line and 'method="GET"' in line
               for line in lines), lines
    assert any('route="unmatched"' in line and 'status="404"' in line for line in lines), lines
    assert str(item) not in text  # no raw paths: one series per route, not per id
    assert any('route="/items/{item_id}"' in line
               for line in _metric_lines(text, "http_server_request_duration_seconds_count"))


async def test_request_id_is_echoed_or_generated_and_set_in_context(service):
    running, _ = service
    api = ApiClient(running.url)
    given = await api.get("/context", headers={"X-Request-ID": "from-the-caller-1"})
    assert given.headers["X-Request-ID"] == "from-the-caller-1"
    assert given.body["request_id"] == "from-the-caller-1"

    generated = await api.get("/context")
    request_id = generated.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert generated.body["request_id"] == request_id
    assert (await api.get("/context")).headers["X-Request-ID"] != request_id


async def test_incoming_request_timeout_becomes_the_request_deadline(service):
    running, _ = service
    api = ApiClient(running.url)
    with_timeout = await api.get("/context", headers={"X-Request-Timeout": "2.5"})
    assert 0 < with_timeout.body["remaining"] <= 2.5
    assert (await api.get("/context")).body["remaining"] is None
    assert (await api.get("/context", headers={"X-Request-Timeout": "soon"})).body["remaining"] is None


async def test_raised_problem_is_problem_json(service):
    running, _ = service
    reply = await ApiClient(running.url).get("/out-of-stock")
    assert reply.status == 409
    assert reply.headers["Content-Type"].startswith(PROBLEM_JSON)
    assert reply.headers["Retry-After"] == "7"
    assert reply.body == {
        "type": "https://microshop.dev/problems/out-of-stock",
        "title": "Out of stock",
        "status": 409,
        "detail": "Only 2 of sku-1 left.",
        "instance": "/out-of-stock",
        "sku": "sku-1",
        "available": 2,
    }


def test_problem_defaults():
    problem = Problem(404, "No such order.")
    assert problem.body() == {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "No such order."}
    full_uri = Problem(400, "x", type="https://example.org/problems/other")
    assert full_uri.type == "https://example.org/problems/other"


async def test_validation_error_is_422_problem_with_errors(service):
    running, _ = service
    api = ApiClient(running.url)
    reply = await api.post("/things", json={"name": "bolt", "quantity": "many"})
    assert reply.status == 422
    assert reply.headers["Content-Type"].startswith(PROBLEM_JSON)
    assert reply.body["type"] == "https://microshop.dev/problems/validation-error"
    assert reply.body["status"] == 422
    assert [e["loc"] for e in reply.body["errors"]] == [["body", "quantity"]]
    assert all(e["msg"] and e["type"] for e in reply.body["errors"])

    bad_path = await api.get("/items/not-a-number")
    assert bad_path.status == 422
    assert [e["loc"] for e in bad_path.body["errors"]] == [["path", "item_id"]]

    ok = await api.post("/things", json={"name": "bolt", "quantity": 3})
    assert ok.status == 201 and ok.body == {"name": "bolt", "quantity": 3}


async def test_http_errors_are_problem_json(service):
    running, _ = service
    api = ApiClient(running.url)
    missing = await api.get("/no/such/path")
    assert missing.status == 404
    assert missing.headers["Content-Type"].startswith(PROBLEM_JSON)
    assert missing.body["status"] == 404 and missing.body["instance"] == "/no/such/path"
    wrong_method = await api.request("DELETE", "/health")
    assert wrong_method.status == 405
    assert wrong_method.body["status"] == 405
    assert "GET" in wrong_method.headers["Allow"]


async def test_unhandled_exception_is_500_problem_without_the_exception_text(service, span_exporter):
    running, _ = service
    trace_id = uuid.uuid4().hex
    reply = await ApiClient(running.url).get(
        "/boom", headers={"X-Request-ID": "boom-1", "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}
    )
    assert reply.status == 500
    assert reply.headers["Content-Type"].startswith(PROBLEM_JSON)
    assert reply.body["type"] == "https://microshop.dev/problems/internal-error"
    assert reply.body["status"] == 500
    text = str(reply.body)
    assert "hunter2" not in text and "RuntimeError" not in text and "postgresql" not in text
    # The id a client would quote when reporting the failure.
    assert reply.headers["X-Request-ID"] == "boom-1"
    span = await wait_until(lambda: _server_span(span_exporter, trace_id), timeout=5, what="server span")
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 500
    assert [e.attributes["exception.type"] for e in span.events if e.name == "exception"] == ["RuntimeError"]


async def _server_span(exporter, trace_id: str):
    return next(
        (s for s in exporter.get_finished_spans()
         if s.kind == SpanKind.SERVER and format(s.context.trace_id, "032x") == trace_id),
        None,
    )


async def test_incoming_traceparent_is_the_server_span_parent(service, span_exporter):
    running, _ = service
    trace_id = uuid.uuid4().hex
    parent_id = uuid.uuid4().hex[:16]
    reply = await ApiClient(running.url).get(
        "/items/7", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}
    )
    assert reply.status == 200

    span = await wait_until(lambda: _server_span(span_exporter, trace_id), timeout=5, what="server span exported")
    assert format(span.parent.span_id, "016x") == parent_id
    assert span.name == "GET /items/{item_id}"
    assert span.attributes["http.route"] == "/items/{item_id}"
    assert span.attributes["http.response.status_code"] == 200


async def test_probes_and_scrapes_make_no_span_even_in_a_sampled_trace(service, span_exporter):
    running, _ = service
    api = ApiClient(running.url)
    probe_trace, request_trace = uuid.uuid4().hex, uuid.uuid4().hex
    for path in ("/health", "/ready", "/metrics"):
        await api.get(path, headers={"traceparent": f"00-{probe_trace}-{uuid.uuid4().hex[:16]}-01"})
    await api.get("/items/7", headers={"traceparent": f"00-{request_trace}-{uuid.uuid4().hex[:16]}-01"})
    await wait_until(lambda: _server_span(span_exporter, request_trace), timeout=5, what="the request's span")
    assert await _server_span(span_exporter, probe_trace) is None  # exported before the request's, if at all


async def test_over_the_in_flight_limit_requests_are_shed_at_once(tmp_path):
    """Beyond max_in_flight, a request gets 503 problem+json with Retry-After without waiting;
    health stays answerable; once the load drops, requests are served again."""
    router = APIRouter()
    release = asyncio.Event()
    entered: list[int] = []

    @router.get("/slow")
    async def slow() -> dict:
        entered.append(1)
        await release.wait()
        return {"ok": True}

    settings = ServiceSettings(service_name="shedding", data_dir=tmp_path, max_in_flight=2)
    async with RunningApp(create_app(settings=settings, version="1", routers=[router])) as running:
        api = ApiClient(running.url)
        held = [asyncio.create_task(api.get("/slow")) for _ in range(2)]
        async def both_entered() -> bool:
            return len(entered) == 2

        await wait_until(both_entered, timeout=10, what="two requests in progress")
        shed = await api.get("/slow")
        assert shed.status == 503 and shed.headers["Retry-After"] == "1"
        assert shed.headers["Content-Type"] == PROBLEM_JSON and shed.body["type"].endswith("/overloaded")
        assert len(entered) == 2  # the shed request never reached the endpoint
        assert (await api.get("/health")).status == 200
        metrics_text = (await api.get("/metrics")).body
        assert re.search(r"^http_server_requests_shed_total [1-9]", metrics_text, re.M)
        release.set()
        assert [r.status for r in await asyncio.gather(*held)] == [200, 200]
        assert (await api.get("/slow")).status == 200
