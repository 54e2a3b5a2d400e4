"""Black-box tests of the chaos proxy over real sockets on free 127.0.0.1 ports.

An aiohttp upstream (counting the requests it handles) sits behind one proxy; the admin API is served
on its own free port and driven over HTTP, like the chaos tests will.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from microshop_chaos_proxy.__main__ import parse_args
from microshop_chaos_proxy.admin import create_app
from microshop_chaos_proxy.events import EventLog
from microshop_chaos_proxy.proxy import Proxy, ProxyRegistry, make_rng
from microshop_chaos_proxy.toxics import parse_toxic

LOCALHOST = "127.0.0.1"
CHUNKS = 10
CHUNK_GAP = 0.02  # the upstream spaces its chunks so they reach the proxy as separate reads


async def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll a real condition (not a fixed sleep standing in for one)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


@dataclass
class Upstream:
    port: int
    hits: dict[str, int] = field(default_factory=dict)


def upstream_app(upstream: Upstream) -> web.Application:
    def count(request: web.Request) -> None:
        upstream.hits[request.path] = upstream.hits.get(request.path, 0) + 1

    async def hello(request: web.Request) -> web.Response:
        count(request)
        return web.Response(text="hello")

    async def echo(request: web.Request) -> web.Response:
        count(request)
        return web.Response(body=await request.read())

    async def big(request: web.Request) -> web.Response:
        count(request)
        return web.Response(body=b"x" * int(request.query["n"]))

    async def chunks(request: web.Request) -> web.StreamResponse:
        count(request)
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(CHUNKS):
            if i:
                await asyncio.sleep(CHUNK_GAP)  # workload shape, not synchronisation
            await response.write(b"c" * 1000)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_post("/echo", echo)
    app.router.add_get("/big", big)
    app.router.add_get("/chunks", chunks)
    return app


async def serve_app(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOCALHOST, 0)
    await site.start()
    return runner, runner.addresses[0][1]


@dataclass
class Env:
    upstream: Upstream
    proxy: Proxy
    registry: ProxyRegistry
    admin: str
    events: io.StringIO
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.proxy.listen_port}"

    async def add_toxic(self, type_: str, name: str | None = None, **attributes: object) -> None:
        body: dict[str, object] = {"type": type_, "attributes": attributes}
        if name:
            body["name"] = name
        async with self.http.post(f"{self.admin}/proxies/svc/toxics", json=body) as r:
            assert r.status == 201, await r.text()

    async def remove_toxic(self, name: str) -> None:
        async with self.http.delete(f"{self.admin}/proxies/svc/toxics/{name}") as r:
            assert r.status == 204

    async def set_enabled(self, enabled: bool) -> dict:
        async with self.http.post(f"{self.admin}/proxies/svc", json={"enabled": enabled}) as r:
            assert r.status == 200
            return await r.json()

    def event_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.events.getvalue().splitlines()]


async def start_proxy(name: str, upstream_port: int, events: EventLog, rng: random.Random | None = None) -> Proxy:
    proxy = Proxy(name, LOCALHOST, 0, LOCALHOST, upstream_port, rng=rng, events=events)
    await proxy.start()
    return proxy


@pytest_asyncio.fixture
async def env() -> AsyncIterator[Env]:
    upstream = Upstream(port=0)
    up_runner, upstream.port = await serve_app(upstream_app(upstream))
    events_text = io.StringIO()
    events = EventLog([events_text])
    registry = ProxyRegistry(events)
    proxy = registry.add(Proxy("svc", LOCALHOST, 0, LOCALHOST, upstream.port, rng=random.Random(1), events=events))
    await registry.start()
    admin_runner, admin_port = await serve_app(create_app(registry))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        yield Env(upstream, proxy, registry, f"http://{LOCALHOST}:{admin_port}", events_text, http)
        await registry.close()
        await wait_until(lambda: proxy.stats.connections_active == 0)
    await admin_runner.cleanup()
    await up_runner.cleanup()


async def timed_get(session: aiohttp.ClientSession, url: str) -> tuple[float, bytes]:
    started = time.monotonic()
    async with session.get(url) as r:
        body = await r.read()
        assert r.status == 200
    return time.monotonic() - started, body


# -- pass-through ----------------------------------------------------------------------------------


async def test_pass_through_keeps_http_and_keep_alive_working(env: Env) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, many 64 KiB chunks each way
    async with aiohttp.ClientSession() as keep_alive:
        for _ in range(3):
            async with keep_alive.get(f"{env.url}/hello") as r:
                assert r.status == 200 and await r.text() == "hello"
        async with keep_alive.post(f"{env.url}/echo", data=payload) as r:
            assert await r.read() == payload
    assert env.upstream.hits == {"/hello": 3, "/echo": 1}
    stats = env.proxy.stats
    assert stats.connections_total == 1
    assert stats.bytes_up > len(payload) and stats.bytes_down > len(payload)
    await wait_until(lambda: env.proxy.stats.connections_active == 0)


async def test_half_close_is_passed_on_both_ways() -> None:
    async def echo_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's FIN
        writer.write(data[::-1])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo_until_eof, LOCALHOST, 0)
    proxy = await start_proxy("raw", server.sockets[0].getsockname()[1], EventLog([io.StringIO()]))
    reader, writer = await asyncio.open_connection(LOCALHOST, proxy.listen_port)
    writer.write(b"abc" * 50_000)
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 3) == (b"abc" * 50_000)[::-1]
    writer.close()
    await wait_until(lambda: proxy.stats.connections_active == 0)
    await proxy.close()
    server.close()
    await server.wait_closed()


async def test_upstream_down_closes_the_client_promptly() -> None:
    with socket_reserved() as port:
        proxy = await start_proxy("dead", port, EventLog([io.StringIO()]))
        reader, writer = await asyncio.open_connection(LOCALHOST, proxy.listen_port)
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 2)
        writer.close()
        assert proxy.stats.connections_active == 0
        await proxy.close()


@contextlib.contextmanager
def socket_reserved() -> Iterator[int]:
    """A port nobody listens on (bound, never listening), so connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        yield sock.getsockname()[1]


# -- toxics ----------------------------------------------------------------------------------------


async def test_latency_is_added_once_per_response_not_per_chunk(env: Env) -> None:
    direct, body = await timed_get(env.http, f"http://{LOCALHOST}:{env.upstream.port}/chunks")
    assert len(body) == CHUNKS * 1000
    await env.add_toxic("latency", latency_ms=300)
    small, _ = await timed_get(env.http, f"{env.url}/hello")
    assert 0.3 <= small < 0.3 + 0.5
    proxied, body = await timed_get(env.http, f"{env.url}/chunks")
    assert len(body) == CHUNKS * 1000
    # Accumulating delays would give ~CHUNKS * 0.3 s = 3 s.
    assert 0.3 <= proxied < direct + 0.3 + 0.5
    await env.remove_toxic("latency")
    fast, _ = await timed_get(env.http, f"{env.url}/hello")
    assert fast < 0.2


async def test_error_toxic_answers_itself_and_upstream_never_sees_the_request(env: Env) -> None:
    await env.add_toxic("error", rate=1.0)
    async with env.http.get(f"{env.url}/hello") as r:
        assert r.status == 503
        assert r.headers["Content-Type"] == "application/problem+json"
        assert r.headers["Retry-After"] == "1"
        assert r.headers["Connection"] == "close"
        problem = await r.json(content_type=None)
    assert problem == {
        "type": "https://microshop.dev/problems/injected-fault",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "fault injected by microshop chaos proxy",
    }
    assert env.upstream.hits == {}
    assert env.proxy.stats.requests_failed_by_toxics == 1

    await env.remove_toxic("error")
    await env.add_toxic("error", name="never", rate=0.0, status=500)
    async with aiohttp.ClientSession() as keep_alive:  # several requests on one connection
        for _ in range(5):
            async with keep_alive.get(f"{env.url}/hello") as r:
                assert r.status == 200
    assert env.upstream.hits == {"/hello": 5}


async def test_error_toxic_is_decided_per_request_on_a_keep_alive_connection(env: Env) -> None:
    async with aiohttp.ClientSession() as keep_alive:
        async with keep_alive.get(f"{env.url}/hello") as r:
            assert r.status == 200
        await env.add_toxic("error", rate=1.0, status=502)  # the connection above is still open
        async with keep_alive.get(f"{env.url}/hello") as r:
            assert r.status == 502
    assert env.upstream.hits == {"/hello": 1}


async def test_reset_peer_after_request_leaves_an_unknown_outcome(env: Env) -> None:
    await env.add_toxic("reset_peer", rate=1.0)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with env.http.post(f"{env.url}/echo", data=b"pay 10 EUR") as r:
            await r.read()
    assert env.upstream.hits == {"/echo": 1}  # the callee did the work
    assert env.proxy.stats.requests_failed_by_toxics == 1


async def test_reset_peer_before_request_never_reaches_upstream(env: Env) -> None:
    await env.add_toxic("reset_peer", rate=1.0, after_request=False)
    reader, writer = await asyncio.open_connection(LOCALHOST, env.proxy.listen_port)
    writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 2)
    writer.close()
    assert env.upstream.hits == {}


async def test_timeout_blackholes_until_removed(env: Env) -> None:
    await env.add_toxic("timeout")
    with pytest.raises(asyncio.TimeoutError):
        async with env.http.get(f"{env.url}/hello", timeout=aiohttp.ClientTimeout(total=0.3)) as r:
            await r.read()
    # The upstream may have answered, but nothing came back through the blackhole.
    await env.remove_toxic("timeout")
    _, body = await timed_get(env.http, f"{env.url}/hello")
    assert body == b"hello"


async def test_bandwidth_limits_throughput(env: Env) -> None:
    await env.add_toxic("bandwidth", rate_kbps=200)
    elapsed, body = await timed_get(env.http, f"{env.url}/big?n=100000")
    assert len(body) == 100_000
    assert 0.45 <= elapsed < 1.5  # 100 kB at 200 kB/s = 0.5 s


async def test_several_toxics_combine(env: Env) -> None:
    await env.add_toxic("latency", latency_ms=200)
    await env.add_toxic("error", rate=1.0)
    async with env.http.get(f"{env.url}/hello") as r:
        assert r.status == 503  # the injected answer does not come from upstream: no latency applies
    await env.remove_toxic("error")
    elapsed, _ = await timed_get(env.http, f"{env.url}/hello")
    assert elapsed >= 0.2


# -- partitions ------------------------------------------------------------------------------------


async def test_disable_refuses_and_resets_then_enable_listens_on_the_same_port(env: Env) -> None:
    port = env.proxy.listen_port
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readuntil(b"hello")).startswith(b"HTTP/1.1 200")

    state = await env.set_enabled(False)
    assert state["enabled"] is False
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 2)
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(LOCALHOST, port)
    assert (await env.set_enabled(False))["enabled"] is False  # idempotent

    state = await env.set_enabled(True)
    assert state["enabled"] is True and state["listen"] == f"{LOCALHOST}:{port}"
    _, body = await timed_get(env.http, f"{env.url}/hello")
    assert body == b"hello" and env.proxy.listen_port == port
    actions = [e["action"] for e in env.event_lines() if e["proxy"] == "svc"]
    assert actions == ["listening", "disabled", "enabled"]


# -- admin API -------------------------------------------------------------------------------------


async def test_admin_api_reports_and_validates(env: Env) -> None:
    admin, http = env.admin, env.http
    async with http.get(f"{admin}/health") as r:
        assert r.status == 200 and await r.json() == {"status": "ok"}
    async with http.get(f"{admin}/proxies") as r:
        svc = (await r.json())["proxies"]["svc"]
    assert svc["listen"] == f"{LOCALHOST}:{env.proxy.listen_port}"
    assert svc["upstream"] == f"{LOCALHOST}:{env.upstream.port}"
    assert svc["enabled"] is True and svc["toxics"] == []
    assert set(svc["stats"]) == {
        "connections_total",
        "connections_active",
        "requests_failed_by_toxics",
        "bytes_up",
        "bytes_down",
    }

    async def problem(method: str, path: str, status: int, body: object = None) -> dict:
        async with http.request(method, f"{admin}{path}", json=body) as r:
            assert r.status == status, await r.text()
            assert r.content_type == "application/problem+json"
            p = await r.json(content_type=None)
            assert {"type", "title", "status", "detail"} <= set(p) and p["status"] == status
            return p

    await problem("GET", "/proxies/nope", 404)
    await problem("POST", "/proxies/nope/toxics", 404, {"type": "timeout"})
    await problem("DELETE", "/proxies/svc/toxics/nope", 404)
    await problem("GET", "/no/such/route", 404)
    await problem("POST", "/proxies/svc", 422, {"enabled": "no"})
    await problem("POST", "/proxies/svc/toxics", 422, {"type": "gremlins"})
    await problem("POST", "/proxies/svc/toxics", 422, {"type": "latency", "attributes": {}})
    await problem("POST", "/proxies/svc/toxics", 422, {"type": "latency", "attributes": {"latency_ms": -1}})
    await problem("POST", "/proxies/svc/toxics", 422, {"type": "latency", "attributes": {"latency_ms": 60_001}})
    await problem("POST", "/proxies/svc/toxics", 422, {"type": "error", "attributes": {"rate": 1.5}})
    await problem("POST", "/proxies/svc/toxics", 422, {"type": "error", "attributes": {"rate": 1, "status": 404}})
    await problem("POST", "/proxies/svc/toxics", 422, {"type": "error", "attributes": {"rate": True}})
    await problem("POST", "/proxies/svc/toxics", 422, {"type": "bandwidth", "attributes": {"rate_kbps": 0}})
    await problem("POST", "/proxies/svc/toxics", 422, {"type": "reset_peer", "attributes": {"rate": 1, "x": 1}})
    async with http.post(f"{admin}/proxies/svc/toxics", data=b"{not json") as r:
        assert r.status == 400 and r.content_type == "application/problem+json"

    async with http.post(f"{admin}/proxies/svc/toxics", json={"type": "latency", "attributes": {"latency_ms": 5}}) as r:
        assert r.status == 201
        assert await r.json() == {
            "name": "latency",
            "type": "latency",
            "attributes": {"latency_ms": 5.0, "jitter_ms": 0.0},
        }
    await problem("POST", "/proxies/svc/toxics", 409, {"type": "latency", "attributes": {"latency_ms": 1}})
    async with http.get(f"{admin}/proxies/svc") as r:
        assert [t["name"] for t in (await r.json())["toxics"]] == ["latency"]
    assert env.event_lines()[-1]["action"] == "toxic_added"


async def test_reset_clears_toxics_and_reenables(env: Env) -> None:
    await env.add_toxic("error", rate=1.0)
    await env.add_toxic("latency", name="slow", latency_ms=100)
    await env.set_enabled(False)
    async with env.http.post(f"{env.admin}/reset") as r:
        assert r.status == 204
    async with env.http.get(f"{env.admin}/proxies/svc") as r:
        state = await r.json()
    assert state["enabled"] is True and state["toxics"] == []
    elapsed, body = await timed_get(env.http, f"{env.url}/hello")
    assert body == b"hello" and elapsed < 0.1
    last = env.event_lines()[-1]
    assert last["action"] == "reset" and [t["name"] for t in last["details"]["toxics_removed"]] == ["error", "slow"]
    assert set(last) == {"ts", "proxy", "action", "details"}


# -- randomness ------------------------------------------------------------------------------------


async def test_same_seed_gives_the_same_fault_decisions(env: Env) -> None:
    events = EventLog([io.StringIO()])
    outcomes = []
    for _ in range(2):
        proxy = await start_proxy("seeded", env.upstream.port, events, rng=make_rng(42, "seeded"))
        proxy.add_toxic(parse_toxic({"type": "error", "attributes": {"rate": 0.5}}))
        statuses = []
        for _ in range(24):
            async with env.http.get(f"http://{LOCALHOST}:{proxy.listen_port}/hello") as r:
                statuses.append(r.status)
        outcomes.append(statuses)
        await proxy.close()
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {200, 503}
    assert make_rng(42, "a").random() != make_rng(42, "b").random()  # proxies draw independently


# -- command line ----------------------------------------------------------------------------------


def test_parse_args() -> None:
    config = parse_args(["--proxy", "orders=18103:127.0.0.1:8103", "--proxy", "psp=0:[::1]:8090", "--seed", "7"])
    assert [(p.name, p.listen_port, p.upstream_host, p.upstream_port) for p in config.proxies] == [
        ("orders", 18103, "127.0.0.1", 8103),
        ("psp", 0, "::1", 8090),
    ]
    assert config.seed == 7 and config.admin_port == 8474
    with pytest.raises(SystemExit):
        parse_args(["--proxy", "nonsense"])
    with pytest.raises(SystemExit):
        parse_args(["--proxy", "a=1:h:2", "--proxy", "a=3:h:4"])


async def test_cli_serves_until_sigterm(env: Env, tmp_path) -> None:
    log_file = tmp_path / "faults.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "microshop_chaos_proxy",
        "--host",
        LOCALHOST,
        "--admin-port",
        "0",
        "--proxy",
        f"svc=0:{LOCALHOST}:{env.upstream.port}",
        "--seed",
        "3",
        "--log-file",
        str(log_file),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        lines = []
        while not lines or lines[-1]["action"] != "admin_listening":
            line = await asyncio.wait_for(process.stdout.readline(), 10)
            assert line, "the proxy exited before it was ready"
            lines.append(json.loads(line))
        admin = lines[-1]["details"]["url"]
        listen = lines[0]["details"]["listen"]
        assert lines[0]["proxy"] == "svc" and lines[0]["action"] == "listening"
        async with env.http.get(f"{admin}/health") as r:
            assert await r.json() == {"status": "ok"}
        async with env.http.get(f"http://{listen}/hello") as r:
            assert await r.text() == "hello"
        async with env.http.post(f"{admin}/proxies/svc/toxics", json={"type": "timeout"}) as r:
            assert r.status == 201
        added = json.loads(await asyncio.wait_for(process.stdout.readline(), 5))
        assert added["action"] == "toxic_added" and added["details"]["toxic"]["type"] == "timeout"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 10) == 0
    logged = [json.loads(line)["action"] for line in log_file.read_text().splitlines()]
    assert logged == ["listening", "admin_listening", "toxic_added", "stopping"]
