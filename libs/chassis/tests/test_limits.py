"""The request edge every service and the gateway share (issue 8 items 5 and 11): size limits
before parsing, strict request bodies, one problem shape for a bad body, hygiene headers, client
disconnects, malformed HTTP and the errors the OpenAPI document shows. Real uvicorn servers on free
ports, configured as services run (runner.server_config), and raw sockets where a client would
misbehave."""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

import pytest
import uvicorn
from fastapi import APIRouter, Query, Request, Response
from microshop_chassis.app import create_app
from microshop_chassis.auth import AdminUser, CurrentUser, JwtVerifier
from microshop_chassis.errors import PROBLEM_JSON
from microshop_chassis.provide import provide
from microshop_chassis.runner import server_config
from microshop_chassis.schemas import JsonDatetime, JsonUUID, RequestModel
from microshop_chassis.settings import ServiceSettings
from microshop_chassis.testing import ApiClient, TokenMint, free_port, wait_until
from pydantic import Field

MAX_BODY = 64 * 1024
MAX_HEADERS = 4 * 1024


class LineIn(RequestModel):
    sku: str = Field(max_length=64)
    quantity: int = Field(ge=1, le=1000)


class OrderIn(RequestModel):
    items: list[LineIn]
    deliver_after: JsonDatetime | None = None
    basket: JsonUUID | None = None


def build_app(settings: ServiceSettings, calls: list[str]):
    router = APIRouter()

    @router.post("/orders", status_code=201)
    async def place(order: OrderIn) -> dict:
        calls.append("orders")
        return json.loads(order.model_dump_json())

    @router.post("/raw")
    async def raw(request: Request) -> dict:  # reads the body itself, as the gateway's proxy does
        calls.append("raw")
        return {"bytes": len(await request.body())}

    @router.get("/public")
    async def public(response: Response) -> dict:
        response.headers["Cache-Control"] = "public, max-age=60"
        return {"ok": True}

    @router.get("/me")
    async def me(caller: CurrentUser) -> dict:
        return {"id": caller.id}

    @router.delete("/things/{thing_id}", status_code=204)
    async def delete_thing(thing_id: str, _: AdminUser) -> None:
        return None

    @router.get("/search")
    async def search(q: Annotated[str, Query(max_length=50)] = "") -> dict:
        return {"q": q}

    return create_app(settings=settings, version="1", routers=[router])


@asynccontextmanager
async def serving(app, settings: ServiceSettings):
    """The app under uvicorn exactly as ``runner.serve`` configures it (bounded head, no banner)."""
    port = free_port()
    config = server_config(app, host="127.0.0.1", port=port, max_header_bytes=settings.max_header_bytes,
                           loop="asyncio", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: _started(server, task), timeout=20, what="app startup")
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def _started(server: uvicorn.Server, task: asyncio.Task) -> bool:
    if task.done():
        task.result()
    return server.started


@pytest.fixture
async def edge(tmp_path):
    calls: list[str] = []
    mint = TokenMint()
    settings = ServiceSettings(service_name="edge", data_dir=tmp_path, max_body_bytes=MAX_BODY,
                               max_header_bytes=MAX_HEADERS)
    app = build_app(settings, calls)
    provide(app, JwtVerifier, mint.verifier())
    async with serving(app, settings) as port:
        yield port, calls, mint


async def raw_exchange(port: int, head: bytes, body_chunks=(), *, read_timeout: float = 10.0) -> bytes:
    """Send ``head`` then each chunk, as a client that stops sending once an answer arrives (as
    curl does), and return what the server sent until it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()

    async def collect() -> None:
        try:
            while chunk := await reader.read(65536):
                received.extend(chunk)
        except ConnectionResetError:  # closed with our bytes unread: what arrived before counts
            pass

    collector = asyncio.create_task(collect())
    try:
        writer.write(head)
        await writer.drain()
        for chunk in body_chunks:
            if received or collector.done():
                break
            try:
                writer.write(chunk)
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                break
        await asyncio.wait_for(collector, read_timeout)
        return bytes(received)
    finally:
        collector.cancel()
        writer.close()


def parse_reply(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body) if body else {}


# --- size limits --------------------------------------------------------------------------------


async def test_a_declared_body_over_the_limit_is_refused_413_before_a_byte_is_read(edge):
    port, calls, _ = edge
    head = (b"POST /raw HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 104857600\r\n\r\n")
    # No body is sent at all: an answer proves the server did not wait to read 100 MB.
    status, headers, body = parse_reply(await raw_exchange(port, head))
    assert status == 413
    assert headers["content-type"].startswith(PROBLEM_JSON)
    assert headers["connection"] == "close"
    assert body["type"] == "https://microshop.dev/problems/payload-too-large"
    assert body["max_bytes"] == MAX_BODY
    assert calls == []


@pytest.mark.parametrize("path", ["/raw", "/orders"])
async def test_a_chunked_body_is_cut_at_the_limit_with_413(edge, path):
    port, calls, _ = edge
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    piece = b"x" * 16 * 1024
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    # Up to 16 MB offered; the server answers after the first 64 KiB and closes.
    status, headers, body = parse_reply(await raw_exchange(port, head, [chunk] * 1024))
    assert status == 413
    assert headers["content-type"].startswith(PROBLEM_JSON)
    assert body["type"] == "https://microshop.dev/problems/payload-too-large"
    assert "orders" not in calls  # the model never saw the cut body


async def test_a_chunked_body_under_the_limit_goes_through(edge):
    port, calls, _ = edge
    payload = json.dumps({"items": [{"sku": "A", "quantity": 2}]}).encode()
    head = b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n" \
           b"Connection: close\r\n\r\n"
    chunks = [f"{len(payload):x}\r\n".encode() + payload + b"\r\n", b"0\r\n\r\n"]
    status, _, body = parse_reply(await raw_exchange(port, head, chunks))
    assert status == 201 and body["items"] == [{"sku": "A", "quantity": 2}]


async def test_headers_over_the_limit_are_431_problem(edge):
    port, calls, _ = edge
    api = ApiClient(f"http://127.0.0.1:{port}")
    reply = await api.post("/raw", json={}, headers={"X-Junk": "j" * (MAX_HEADERS + 1)})
    assert reply.status == 431
    assert reply.headers["Content-Type"].startswith(PROBLEM_JSON)
    assert reply.body["type"] == "https://microshop.dev/problems/headers-too-large"
    assert calls == []


async def test_a_huge_header_is_cut_by_the_server_before_it_is_held_in_memory(edge):
    port, calls, _ = edge
    head = b"GET /public HTTP/1.1\r\nHost: x\r\nX-Junk: "
    # 8 MB of one header value, in pieces: the server answers 431 long before the last one.
    status, headers, body = parse_reply(await raw_exchange(port, head, [b"j" * 65536] * 128))
    assert status == 431
    assert headers["content-type"] == PROBLEM_JSON
    assert body["type"] == "https://microshop.dev/problems/headers-too-large"


# --- request bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "error_type"),
    [({"sku": "A", "quantity": True}, "int_type"), ({"sku": "A", "quantity": "2"}, "int_type"),
     ({"sku": "A", "quantity": 2, "price_cents": 1}, "extra_forbidden"),
     ({"sku": "A" * 10_000, "quantity": 2}, "string_too_long")],
)
async def test_request_bodies_are_strict_and_refuse_unknown_fields(edge, line, error_type):
    port, calls, _ = edge
    reply = await ApiClient(f"http://127.0.0.1:{port}").post("/orders", json={"items": [line]})
    assert reply.status == 422
    assert reply.body["type"] == "https://microshop.dev/problems/validation-error"
    assert [e["type"] for e in reply.body["errors"]] == [error_type]
    assert calls == []


async def test_strict_bodies_still_parse_datetimes_and_uuids_from_json_strings(edge):
    port, _, _ = edge
    basket = str(uuid.uuid4())
    reply = await ApiClient(f"http://127.0.0.1:{port}").post(
        "/orders", json={"items": [{"sku": "A", "quantity": 1}], "deliver_after": "2030-01-02T03:04:05Z",
                         "basket": basket})
    assert reply.status == 201, reply.body
    assert datetime.fromisoformat(reply.body["deliver_after"]) == datetime.fromisoformat("2030-01-02T03:04:05+00:00")
    assert reply.body["basket"] == basket


@pytest.mark.parametrize("body", [b'{"items": [', b'\xff\xfe{"items": []}'], ids=["not-json", "not-utf8"])
async def test_a_body_that_is_not_json_is_the_same_validation_problem(edge, body):
    port, _, _ = edge
    head = (f"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    status, headers, problem = parse_reply(await raw_exchange(port, head + body))
    assert status == 422
    assert headers["content-type"].startswith(PROBLEM_JSON)
    assert problem["type"] == "https://microshop.dev/problems/validation-error"
    assert [e["type"] for e in problem["errors"]] == ["json_invalid"]


# --- hygiene headers, banner, disconnects, malformed HTTP -----------------------------------------


async def test_every_answer_says_nosniff_and_carries_no_server_banner(edge):
    port, _, _ = edge
    api = ApiClient(f"http://127.0.0.1:{port}")
    for reply in (await api.get("/public"), await api.get("/nowhere"), await api.get("/health")):
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert "Server" not in reply.headers


async def test_answers_to_authenticated_requests_are_never_stored(edge):
    port, _, mint = edge
    api = ApiClient(f"http://127.0.0.1:{port}")
    anonymous = await api.get("/public")
    assert anonymous.headers["Cache-Control"] == "public, max-age=60"  # the route's own choice
    assert (await api.get("/health")).headers["Cache-Control"] == "no-store"  # no choice made: no-store
    for reply in (await api.get("/public", token=mint.token()), await api.get("/me", token=mint.token()),
                  await api.get("/me", token="not-a-token")):
        assert reply.headers.getall("Cache-Control") == ["no-store"]


async def test_a_client_gone_mid_body_is_a_499_not_a_500(edge):
    port, calls, _ = edge
    head = b"POST /raw HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + b'{"items": ')
    await writer.drain()
    await wait_until(lambda: _true("raw" in calls), timeout=5, what="the handler reading the body")
    writer.close()
    await writer.wait_closed()
    api = ApiClient(f"http://127.0.0.1:{port}")

    async def counted() -> str | None:
        text = (await api.get("/metrics")).body
        return text if 'route="/raw"' in text else None

    text = await wait_until(counted, timeout=5, what="the request counted")
    lines = [line for line in text.splitlines()
             if line.startswith("http_server_requests_total{") and 'route="/raw"' in line]
    assert any('status="499"' in line for line in lines), lines
    assert not any('status="500"' in line for line in lines), lines


async def _true(value: bool) -> bool:
    return value


async def test_bytes_that_are_not_http_get_a_problem_json_400(edge):
    port, _, _ = edge
    status, headers, body = parse_reply(await raw_exchange(port, b"\x16\x03\x01 hello there\r\n\r\n"))
    assert status == 400
    assert headers["content-type"] == PROBLEM_JSON
    assert headers["connection"] == "close"
    assert body["type"] == "https://microshop.dev/problems/malformed-request"
    assert "server" not in headers


# --- what the OpenAPI document shows --------------------------------------------------------------


async def test_the_openapi_document_shows_the_errors_really_sent(edge):
    port, _, _ = edge
    document = (await ApiClient(f"http://127.0.0.1:{port}").get("/openapi.json")).body
    paths = document["paths"]

    def statuses(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert {"401", "503", "431"} <= statuses("/me", "get") and "403" not in statuses("/me", "get")
    assert {"401", "403", "404", "422"} <= statuses("/things/{thing_id}", "delete")
    assert {"413", "422"} <= statuses("/orders", "post")
    assert "401" not in statuses("/public", "get") and "422" not in statuses("/public", "get")
    assert "503" not in statuses("/health", "get")  # never shed
    for item in paths.values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == [PROBLEM_JSON], (status, response)
    validation = paths["/orders"]["post"]["responses"]["422"]["content"][PROBLEM_JSON]["schema"]
    assert validation == {"$ref": "#/components/schemas/ValidationProblemDetails"}
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "errors" in schemas["ValidationProblemDetails"]["properties"]
    assert schemas["OrderIn"]["additionalProperties"] is False
