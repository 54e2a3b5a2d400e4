"""The control socket's chaos routes (chaos_control.py), which the console's chaos page calls: input
checked before anything is touched (400), refusals of the running system (409), and faults injected,
listed, timed and healed on a real chaos proxy run in this process. The page itself, on a whole
system in Chromium: tests/console."""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from microshop_chaos_proxy.admin import create_app
from microshop_chaos_proxy.proxy import Proxy, ProxyRegistry
from microshop_chassis.testing import wait_until
from microshop_cli.chaos_control import BadRequest, active_faults, parse_fault, parse_settle, parse_target
from microshop_cli.control import ControlServer, socket_path
from microshop_cli.state import DataDir

LOCALHOST = "127.0.0.1"


@pytest.mark.parametrize(("body", "says"), [
    ([], "a JSON object"),
    ({"fault": "meteor", "target": "payments"}, "unknown fault 'meteor'"),
    ({"fault": "latency", "ms": 10}, "a target is required"),
    ({"fault": "latency", "target": "nats", "ms": 10}, "'nats' has no chaos proxy"),
    ({"fault": "latency", "target": "users"}, "ms is required"),
    ({"fault": "latency", "target": "users", "ms": -1}, "ms must be from 0 up to 60000, not -1"),
    ({"fault": "latency", "target": "users", "ms": 10, "jitter_ms": 70_000}, "jitter_ms must be from 0"),
    ({"fault": "latency", "target": "users", "ms": "10"}, "ms must be a number"),
    ({"fault": "latency", "target": "users", "ms": True}, "ms must be a number"),
    ({"fault": "error_rate", "target": "users", "percent": 101}, "percent must be from 0 up to 100"),
    ({"fault": "reset", "target": "users", "percent": float("nan")}, "percent must be a number"),
    ({"fault": "reset", "target": "users", "percent": 5, "ms": 3}, "reset takes percent and seconds, not ms"),
    ({"fault": "partition", "target": "users", "mode": "explode"}, "mode must be refuse or drop"),
    ({"fault": "partition", "target": "users", "seconds": 0}, "seconds must be above 0"),
    ({"fault": "partition", "target": "users", "seconds": -5}, "seconds must be above 0"),
])
def test_a_fault_request_that_is_wrong_says_what_is_wrong(body, says):
    with pytest.raises(BadRequest, match=says.replace("(", r"\(")):
        parse_fault(body)


def test_a_fault_request_is_read_with_its_defaults():
    latency = parse_fault({"fault": "latency", "target": "users", "ms": 300})
    assert (latency.fault, latency.target, latency.params, latency.seconds) == (
        "latency", "users", {"ms": 300.0, "jitter_ms": 0.0}, None)
    assert parse_fault({"fault": "error-rate", "target": "card-processor", "percent": 100, "seconds": 2.5}) \
        .params == {"percent": 100.0}  # the CLI's spelling too
    assert parse_fault({"fault": "partition", "target": "orders"}).params == {"mode": "refuse"}
    assert parse_target(None, required=False) is None
    assert parse_settle({}) == 30.0
    with pytest.raises(BadRequest, match="settle_seconds must be from 0 up to 600"):
        parse_settle({"settle_seconds": 601})


def test_the_active_faults_are_read_from_the_proxys_state():
    proxies = {
        "users": {"enabled": False, "toxics": []},
        "payments": {"enabled": True, "toxics": [
            {"name": "chaos-error-rate", "type": "error", "attributes": {"rate": 0.25, "status": 503}},
            {"name": "chaos-latency", "type": "latency", "attributes": {"latency_ms": 300.0, "jitter_ms": 5.0}}]},
        "orders": {"enabled": True, "toxics": [{"name": "chaos-partition", "type": "timeout", "attributes": {}}]},
        "reports": {"enabled": True, "toxics": []},
    }
    assert active_faults(proxies) == [
        {"target": "orders", "fault": "partition", "params": {"mode": "drop"}},
        {"target": "payments", "fault": "error_rate", "params": {"percent": 25.0}},
        {"target": "payments", "fault": "latency", "params": {"ms": 300.0, "jitter_ms": 5.0}},
        {"target": "users", "fault": "partition", "params": {"mode": "refuse"}},
    ]


class Supervisor:
    """The control socket served for a stand-in of System: its data dir, run state and config."""

    def __init__(self, root: Path, processes: dict, chaos_proxies: bool) -> None:
        self.paths = DataDir(root)
        self.config = SimpleNamespace(chaos_proxies=chaos_proxies)
        self._processes = processes

    def state(self) -> dict:
        return {"processes": self._processes}

    async def call(self, method: str, action: str, body: dict | None = None) -> tuple[int, dict]:
        connector = aiohttp.UnixConnector(path=str(socket_path(self.paths)))
        async with aiohttp.ClientSession(connector=connector) as http, \
                http.request(method, f"http://supervisor/{action}", json=body) as reply:
            return reply.status, await reply.json()


@pytest_asyncio.fixture
async def serve_control() -> AsyncIterator:
    servers: list[ControlServer] = []

    async def serve(processes: dict, chaos_proxies: bool) -> Supervisor:
        root = Path(tempfile.mkdtemp(prefix="ctl-"))  # a Unix socket path has at most 107 bytes
        (root / "run").mkdir()
        supervisor = Supervisor(root, processes, chaos_proxies)
        server = ControlServer(supervisor)
        assert await server.start()
        servers.append(server)
        return supervisor

    yield serve
    for server in servers:
        await server.stop()
        shutil.rmtree(server.system.paths.root)


@pytest_asyncio.fixture
async def chaos_proxy() -> AsyncIterator[str]:
    """The real chaos proxy's admin API, with a proxy for payments and one for users (to nothing)."""
    registry = ProxyRegistry()
    for name in ("payments", "users"):
        registry.add(Proxy(name, LOCALHOST, 0, LOCALHOST, 9, rng=random.Random(1)))
    await registry.start()
    runner = web.AppRunner(create_app(registry), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, LOCALHOST, 0).start()
    try:
        yield f"http://{LOCALHOST}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
        await registry.close()


async def test_without_proxies_the_page_is_told_so_and_faults_are_refused(serve_control):
    supervisor = await serve_control({"nats": {"pid": 1}}, chaos_proxies=False)
    assert await supervisor.call("GET", "chaos") == (200, {"ok": True, "proxies": False, "targets": [], "faults": []})
    status, answer = await supervisor.call("POST", "chaos", {"fault": "error_rate", "target": "payments",
                                                             "percent": 100})
    assert status == 409 and "microshop up --chaos-proxies" in answer["error"]
    assert (await supervisor.call("POST", "heal", {"target": "gateway"}))[0] == 400
    assert (await supervisor.call("POST", "verify", {"settle_seconds": -1}))[0] == 400
    status, answer = await supervisor.call("POST", "chaos", {"fault": "latency", "target": "users", "ms": -3})
    assert (status, answer["ok"]) == (400, False)


async def test_faults_are_injected_listed_timed_and_healed_on_the_proxy(serve_control, chaos_proxy):
    supervisor = await serve_control({"chaos-proxy": {"pid": 1, "url": chaos_proxy}}, chaos_proxies=True)
    status, answer = await supervisor.call("POST", "chaos", {"fault": "error_rate", "target": "payments",
                                                             "percent": 100})
    assert (status, answer["applied"], answer["heals_at"]) == (200, "error-rate payments rate=1.0", None)
    status, answer = await supervisor.call("POST", "chaos", {"fault": "partition", "target": "users",
                                                             "seconds": 0.5})
    assert status == 200 and answer["heals_at"]

    status, listed = await supervisor.call("GET", "chaos")
    assert status == 200 and listed["proxies"] and "payments" in listed["targets"]
    assert listed["faults"] == [
        {"target": "payments", "fault": "error_rate", "params": {"percent": 100.0}, "heals_at": None},
        {"target": "users", "fault": "partition", "params": {"mode": "refuse"}, "heals_at": answer["heals_at"]},
    ]

    async def users_healed() -> bool:  # by the supervisor's timer, with payments' fault untouched
        return [f["target"] for f in (await supervisor.call("GET", "chaos"))[1]["faults"]] == ["payments"]

    await wait_until(users_healed, timeout=10, what="the timed partition healed")
    assert (await supervisor.call("POST", "heal", {}))[1]["applied"] == "heal all"
    assert (await supervisor.call("GET", "chaos"))[1]["faults"] == []
    log = supervisor.paths.log_file("chaos").read_text()
    assert log.count('"fault": "heal"') == 2


@pytest.mark.parametrize(("action", "body", "says"), [
    ("scale", {"replicas": 2}, "service is missing"),
    ("scale", {"service": "payments"}, "replicas is missing"),
    ("scale", {"service": "payments", "replicas": "two"}, "replicas must be a whole number"),
    ("scale", {"service": "payments", "replicas": True}, "replicas must be a whole number"),
    ("scale", ["payments", 2], "the body must be a JSON object"),
    ("deploy", {"release": "2.0"}, "service is missing"),
    ("deploy", {"service": "orders", "env": {"A": 1}}, "env must map names to strings"),
    ("deploy", {"service": "orders", "ready_timeout": 0}, "ready_timeout must be a number of seconds above 0"),
])
async def test_a_scale_or_deploy_request_that_is_wrong_is_a_400_saying_what_is_wrong(serve_control, action, body,
                                                                                      says):
    supervisor = await serve_control({"nats": {"pid": 1}}, chaos_proxies=False)
    status, answer = await supervisor.call("POST", action, body)
    assert (status, answer) == (400, {"ok": False, "error": says})
