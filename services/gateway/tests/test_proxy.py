"""The proxy over real HTTP: client -> gateway (uvicorn) -> fake service (aiohttp.web)."""

import gzip
import json
import os
import time

import aiohttp
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from yarl import URL

from microshop_chassis.testing import ApiClient, RunningApp
from microshop_gateway.bootstrap import build
from microshop_gateway.proxy import public_location
from microshop_gateway.settings import Upstream

from .conftest import GZIPPED_TEXT, OPEN_API, UPSTREAM_TIMEOUT

CLIENT_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE_ID}-b7ad6b7169203331-01"


async def send(url: str, method: str = "GET", **kwargs):
    """Raw HTTP, for what ApiClient hides: repeated headers and exact body bytes."""
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, allow_redirects=False, **kwargs) as response:
            return response.status, response.headers.copy(), await response.read()


def seen_headers(echo: dict) -> dict[str, list[str]]:
    """The echoed request's headers, every value of each name."""
    headers: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        headers.setdefault(name, []).append(value)
    return headers


async def test_method_path_query_body_status_and_headers_pass_through(gateway, fake_users):
    reply = await ApiClient(gateway.url).request(
        "PATCH", "/api/users/echo/items/a%2Fb?tag=x&tag=y&q=a%20b",
        json={"name": "mug"}, headers={"X-Echo-Status": "202", "X-Custom": "kept"},
    )
    assert reply.status == 202
    echo = reply.body
    assert echo["service"] == "users" and echo["method"] == "PATCH"
    assert echo["path"] == "/echo/items/a%2Fb"  # the client's encoding, not re-decoded
    assert echo["query"] == "tag=x&tag=y&q=a%20b"
    assert echo["body"] == '{"name": "mug"}'
    headers = seen_headers(echo)
    assert headers["content-type"] == ["application/json"]
    assert headers["x-custom"] == ["kept"]
    assert headers["host"] == [f"127.0.0.1:{fake_users.port}"]
    assert reply.headers["X-Upstream"] == "users"


async def test_forwarded_headers_describe_the_original_request(gateway):
    reply = await ApiClient(gateway.url).get("/api/inventory/echo/")
    headers = seen_headers(reply.body)
    assert reply.body["service"] == "inventory"
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == [f"127.0.0.1:{gateway.port}"]
    assert headers["x-forwarded-prefix"] == ["/api/inventory"]
    assert 0 < float(headers["x-request-timeout"][0]) <= UPSTREAM_TIMEOUT


async def test_forwarded_for_from_a_trusted_proxy_keeps_its_chain(gateway):
    # The test client is 127.0.0.1, a proxy uvicorn trusts by default: it takes the client address
    # from the chain, and the gateway must not list that address twice.
    reply = await ApiClient(gateway.url).get(
        "/api/users/echo/", headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.9"},
    )
    assert seen_headers(reply.body)["x-forwarded-for"] == ["198.51.100.7, 203.0.113.9"]


async def test_repeated_response_headers_survive_and_ours_are_not_doubled(gateway):
    status, headers, _ = await send(gateway.url + "/api/users/echo/")
    assert status == 200
    assert headers.getall("Set-Cookie") == ["first=1; Path=/", "second=2; Path=/"]
    for name in ("Date", "X-Request-ID", "Content-Length"):
        assert len(headers.getall(name)) == 1, name
    assert "Server" not in headers  # no banner: neither the gateway's nor the service's


async def test_request_id_reaches_the_service_and_comes_back(gateway):
    reply = await ApiClient(gateway.url).get("/api/users/echo/", headers={"X-Request-ID": "req-42-abc"})
    assert seen_headers(reply.body)["x-request-id"] == ["req-42-abc"]
    assert reply.headers["X-Request-ID"] == "req-42-abc"


async def test_a_request_id_is_made_when_the_client_sends_none(gateway):
    reply = await ApiClient(gateway.url).get("/api/users/echo/")
    [sent] = seen_headers(reply.body)["x-request-id"]
    assert len(sent) == 32 and reply.headers["X-Request-ID"] == sent


async def test_the_trace_continues_into_the_service(gateway):
    reply = await ApiClient(gateway.url).get("/api/users/echo/", headers={"traceparent": CLIENT_TRACEPARENT})
    [traceparent] = seen_headers(reply.body)["traceparent"]
    version, trace_id, parent_span, flags = traceparent.split("-")
    assert trace_id == CLIENT_TRACE_ID  # same trace
    assert parent_span != "b7ad6b7169203331" and len(parent_span) == 16  # the gateway's span is the parent


async def test_one_server_span_and_one_client_span_per_request_and_the_client_span_is_the_services_parent(gateway):
    # FastAPI's own tracing would add a second server span beside the chassis edge span.
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    gateway.host.tracer_provider.add_span_processor(processor)
    try:
        reply = await ApiClient(gateway.url).get("/api/users/echo/", headers={"traceparent": CLIENT_TRACEPARENT})
    finally:
        processor.shutdown()
    spans = [span for span in exporter.get_finished_spans()
             if format(span.context.trace_id, "032x") == CLIENT_TRACE_ID]
    [server_span] = [span for span in spans if span.kind == SpanKind.SERVER]
    [client_span] = [span for span in spans if span.kind == SpanKind.CLIENT]
    assert len(spans) == 2  # no operation spans either
    assert client_span.parent.span_id == server_span.context.span_id
    assert client_span.name == "GET users" and client_span.attributes["http.response.status_code"] == 200
    [traceparent] = seen_headers(reply.body)["traceparent"]
    assert traceparent.split("-")[2] == format(client_span.context.span_id, "016x")


async def test_problem_bodies_from_a_service_pass_unchanged(gateway, fake_users):
    status, headers, body = await send(gateway.url + "/api/users/problem")
    _, direct_headers, direct_body = await send(fake_users.url + "/problem")
    assert status == 409
    assert headers["Content-Type"] == direct_headers["Content-Type"]
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body == direct_body  # byte for byte, formatting included


async def test_unknown_service_is_404_problem(gateway):
    reply = await ApiClient(gateway.url).get("/api/warehouse/items")
    assert reply.status == 404
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert reply.body["type"].endswith("/unknown-service") and reply.body["service"] == "warehouse"


async def test_dot_segments_are_refused(gateway):
    for path in ("/api/users/echo/../admin", "/api/users/echo/%2E%2E/admin"):
        # encoded=True: sent as written, where a client would normalise the dot-segments away
        status, _, body = await send(URL(gateway.url + path, encoded=True))
        assert status == 400 and json.loads(body)["type"].endswith("/invalid-path"), path


async def test_service_down_is_503_problem_with_retry_after(gateway):
    reply = await ApiClient(gateway.url).post("/api/orders/orders", json={"sku": "MUG-1"})
    assert reply.status == 503
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert reply.headers["Retry-After"] == "1"
    assert reply.body["type"].endswith("/upstream-unavailable") and reply.body["service"] == "orders"


async def test_connection_reset_is_503_and_a_post_is_sent_once(gateway, fake_users):
    reply = await ApiClient(gateway.url).post("/api/users/reset", json={"charge": 100})
    assert reply.status == 503 and reply.body["type"].endswith("/upstream-unavailable")
    assert reply.headers["Retry-After"] == "1"
    assert fake_users.hits["/reset"] == 1  # never retried: the first attempt may have taken effect


async def test_a_reply_that_is_not_http_is_502_problem(gateway):
    reply = await ApiClient(gateway.url).get("/api/users/not-http")
    assert reply.status == 502
    assert reply.body["type"].endswith("/upstream-bad-response") and reply.body["service"] == "users"


async def test_slow_service_is_504_problem_after_upstream_timeout(gateway):
    started = time.monotonic()
    reply = await ApiClient(gateway.url).get("/api/users/slow")
    elapsed = time.monotonic() - started
    assert reply.status == 504
    assert reply.body["type"].endswith("/upstream-timeout") and reply.body["service"] == "users"
    assert UPSTREAM_TIMEOUT * 0.9 <= elapsed < UPSTREAM_TIMEOUT + 2


async def test_a_client_deadline_shortens_the_wait(gateway):
    started = time.monotonic()
    reply = await ApiClient(gateway.url).get("/api/users/slow", headers={"X-Request-Timeout": "0.2"})
    assert reply.status == 504
    assert time.monotonic() - started < UPSTREAM_TIMEOUT * 0.9


async def test_hop_by_hop_request_headers_are_not_forwarded(gateway):
    reply = await ApiClient(gateway.url).get("/api/users/echo/", headers={
        "Connection": "keep-alive, X-Hop-Only",
        "X-Hop-Only": "connection-scoped",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Upgrade": "h2c",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "X-End-To-End": "kept",
        "Authorization": "Bearer for-the-service",
    })
    headers = seen_headers(reply.body)
    for name in ("connection", "x-hop-only", "keep-alive", "te", "upgrade", "proxy-authorization",
                 "transfer-encoding"):
        assert name not in headers, name
    assert headers["x-end-to-end"] == ["kept"]
    assert headers["authorization"] == ["Bearer for-the-service"]  # end to end: services verify it


async def test_hop_by_hop_response_headers_are_not_returned(gateway):
    status, headers, body = await send(gateway.url + "/api/users/hop-by-hop")
    assert status == 200 and body == b"hop"
    for name in ("X-Hop-Only", "Keep-Alive", "Proxy-Authenticate"):
        assert name not in headers, name
    assert headers["X-End-To-End"] == "kept"


async def test_a_one_megabyte_body_round_trips(gateway):
    payload = os.urandom(1024 * 1024)
    status, headers, body = await send(
        gateway.url + "/api/inventory/raw", "POST", data=payload,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 201
    assert headers["Content-Length"] == str(len(payload))
    assert body == payload


async def test_locations_point_at_the_gateway_not_the_service(gateway, fake_users):
    cases = {
        f"{fake_users.url}/orders/7?x=1": "/api/users/orders/7?x=1",  # the service's own address
        "/orders/7": "/api/users/orders/7",  # the service's own path
        "/api/users/orders/7": "/api/users/orders/7",  # a service that honours X-Forwarded-Prefix
        "https://pay.example.com/3ds": "https://pay.example.com/3ds",  # elsewhere: untouched
        "7/receipt": "7/receipt",  # relative: the client resolves it
    }
    for status in ("201", "307"):  # 201 Created and a redirect, which the gateway must not follow
        for location, public in cases.items():
            reply_status, headers, _ = await send(
                gateway.url + "/api/users/created", "POST", headers={"X-Location": location, "X-Echo-Status": status},
            )
            assert reply_status == int(status) and headers["Location"] == public, location


async def test_compressed_replies_pass_through_still_compressed(gateway):
    status, headers, body = await send(gateway.url + "/api/users/gzipped", auto_decompress=False)
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert body == gzip.compress(GZIPPED_TEXT, mtime=0)  # not inflated on the way


async def test_only_the_clients_own_headers_are_sent(gateway):
    # aiohttp would add Accept, Accept-Encoding and User-Agent of its own; a proxy must not.
    _, _, body = await send(gateway.url + "/api/users/echo/", skip_auto_headers=["Accept", "Accept-Encoding",
                                                                                  "User-Agent"])
    headers = seen_headers(json.loads(body))
    for name in ("accept", "accept-encoding", "user-agent", "content-type"):
        assert name not in headers, name


async def test_collection_services_map_to_their_resource_prefix(settings, fake_users):
    """/api/orders is the orders service's /orders collection, not its root."""
    settings = settings.model_copy(update={"orders_url": fake_users.url + "/echo"})
    async with RunningApp(build(settings, public_api=OPEN_API).app) as gateway:
        api = ApiClient(gateway.url)
        collection = await api.post("/api/orders", json={"items": []})
        one = await api.post("/api/orders/7/cancel?reason=x")
    assert collection.status == 200 and collection.body["path"] == "/echo/orders"
    assert one.body["path"] == "/echo/orders/7/cancel" and one.body["query"] == "reason=x"
    assert seen_headers(one.body)["x-forwarded-prefix"] == ["/api"]  # "/api" + "/orders/7" is public


def test_locations_of_a_collection_service_map_back_to_the_public_path():
    orders = Upstream("orders", "http://10.0.0.5:8103", "/orders")
    assert public_location("/orders/7", orders) == "/api/orders/7"
    assert public_location("http://10.0.0.5:8103/orders/7?x=1", orders) == "/api/orders/7?x=1"
    assert public_location("/api/orders/7", orders) == "/api/orders/7"
