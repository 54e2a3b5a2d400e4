"""A graceful stop (SIGTERM) never fails a request already accepted (issue 9, item 4).

A real payments process (``python -m microshop_payments``, the code path of ``microshop up``) with
a real NATS and the real card processor simulator, slowed through its admin knob so that charges
are still in flight when the signal lands. Only users is stood in for (a JWKS served here).
Synchronisation is by observation: the service's own in-flight gauge, /ready, the listener.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from microshop_chassis.events import subject_for
from microshop_chassis.testing import TokenMint, free_port, stream_events, wait_until

CONCURRENT_CHARGES = 12
CARD = {"card_number": "4242424242424242", "expiry_month": 12, "expiry_year": 2099, "cvc": "123"}


class Process:
    """A child process whose output goes to a file (read back for the log checks)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen([sys.executable, *args], env={**os.environ, **env},
                                      stdout=self._log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._log.close()

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()


class Harness:
    def __init__(self, tmp_path: Path, nats_url: str) -> None:
        self.tmp_path = tmp_path
        self.nats_url = nats_url
        self.mint = TokenMint()
        self.service_token = self.mint.token("orders", role="service")
        self.processes: list[Process] = []
        self._jwks_runner: web.AppRunner | None = None

    async def start_jwks(self) -> str:
        """users' JWKS, the one thing of users a service fetches."""

        async def jwks(_request: web.Request) -> web.Response:
            return web.json_response(await self.mint.jwks())

        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", jwks)
        self._jwks_runner = web.AppRunner(app)
        await self._jwks_runner.setup()
        port = free_port()
        await web.TCPSite(self._jwks_runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}"

    async def start_card_processor(self) -> str:
        port = free_port()
        self.processes.append(Process("card-processor", ["-m", "microshop_card_processor", "--port", str(port)],
                                      {}, self.tmp_path))
        url = f"http://127.0.0.1:{port}"
        await wait_until(lambda: _answers(url + "/health"), timeout=20, what="card processor")
        return url

    async def start_payments(self, *, drain_seconds: float) -> tuple[Process, str]:
        users_url = await self.start_jwks()
        processor_url = await self.start_card_processor()
        port = free_port()
        env = {
            "MICROSHOP_PAYMENTS_PORT": str(port),
            "MICROSHOP_DATA_DIR": str(self.tmp_path / "data"),
            "MICROSHOP_NATS_URL": self.nats_url,
            "MICROSHOP_USERS_URL": users_url,
            "MICROSHOP_CARD_PROCESSOR_URL": processor_url,
            "MICROSHOP_DRAIN_SECONDS": str(drain_seconds),
            "MICROSHOP_LOG_FORMAT": "json",
        }
        payments = Process("payments", ["-m", "microshop_payments"], env, self.tmp_path)
        self.processes.append(payments)
        url = f"http://127.0.0.1:{port}"
        await wait_until(lambda: _answers(url + "/ready"), timeout=30, what="payments ready")
        self.processor_url = processor_url
        return payments, url

    async def close(self) -> None:
        for process in self.processes:
            process.stop()
        if self._jwks_runner is not None:
            await self._jwks_runner.cleanup()


async def _answers(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as reply:
            return reply.status == 200
    except aiohttp.ClientError:
        return False


@pytest.fixture
async def harness(tmp_path, nats_server):
    harness = Harness(tmp_path, nats_server.url)
    yield harness
    await harness.close()


async def in_flight(url: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as reply:
        for line in (await reply.text()).splitlines():
            if line.startswith("http_server_requests_in_flight "):
                return float(line.split()[1])
    return 0.0


async def set_processor_latency(processor_url: str, latency_ms: float) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.put(processor_url + "/_admin/config", json={"latency_ms": latency_ms}) as reply:
            assert reply.status == 200, await reply.text()


async def card_token(url: str, service_token: str) -> str:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {service_token}"}) as session:
        async with session.post(url + "/payment-methods", json={**CARD, "customer_id": "c-1"}) as reply:
            assert reply.status == 201, await reply.text()
            return (await reply.json())["token"]


class KeptAliveClient:
    """One client with its own keep-alive connection, opened (and accepted: it got an answer)
    before the charge is sent on it, as a caller's pooled connection is."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                             headers={"Authorization": f"Bearer {token}"})

    async def open(self) -> None:
        async with self.session.get(self.url + "/health") as reply:
            assert reply.status == 200

    async def charge(self, order_id: str, token: str) -> tuple[int, dict]:
        body = {"order_id": order_id, "customer_id": "c-1", "amount_cents": 1250, "currency": "USD",
                "card_token": token}
        async with self.session.post(self.url + "/charges", json=body,
                                     headers={"Idempotency-Key": f"pay-{order_id}"}) as reply:
            return reply.status, await reply.json()

    async def close(self) -> None:
        await self.session.close()


async def raw_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      path: str) -> tuple[int, str, bytes]:
    """One HTTP/1.1 GET on an open connection; (status, head in lower case, body)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    length = next(int(line.split(":")[1]) for line in head.lower().splitlines() if line.startswith("content-length"))
    body = await reader.readexactly(length)
    return int(head.split()[1]), head.lower(), body


async def refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


def errors_logged(process: Process) -> list[str]:
    """Lines at error level or above, and anything that is not one of our JSON log lines."""
    bad = []
    for line in process.log_lines():
        try:
            entry = json.loads(line)
        except ValueError:
            bad.append(line)
            continue
        if entry.get("level") in ("error", "critical", "exception"):
            bad.append(line)
    return bad


async def wait_exit(process: Process, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while process.popen.poll() is None:
        assert time.monotonic() < deadline, f"still running {timeout} s after SIGTERM"
        await asyncio.sleep(0.02)  # polling a child's exit status, not standing in for an event
    return process.popen.returncode


async def test_sigterm_finishes_every_accepted_request_then_exits_0(harness):
    payments, url = await harness.start_payments(drain_seconds=10)
    port = int(url.rsplit(":", 1)[1])
    token = await card_token(url, harness.service_token)
    await set_processor_latency(harness.processor_url, 1500)  # charges stay in flight for 1.5 s

    clients = [KeptAliveClient(url, harness.service_token) for _ in range(CONCURRENT_CHARGES)]
    await asyncio.gather(*(client.open() for client in clients))
    # An idle keep-alive connection, as a caller's pool holds: it will send its next request
    # after the signal.
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await raw_request(idle_reader, idle_writer, "/health"))[0] == 200

    orders = [f"o-{uuid.uuid4().hex[:12]}" for _ in clients]
    charges = [asyncio.create_task(client.charge(order, token)) for client, order in zip(clients, orders, strict=True)]
    await wait_until(lambda: _all_in_flight(url), timeout=10, what="every charge in flight")

    payments.popen.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    # The idle connection is still served: /ready answers 503 (once the signal is handled) and
    # Connection: close.
    while (answer := await raw_request(idle_reader, idle_writer, "/ready"))[0] == 200:
        assert time.monotonic() < signalled + 5, "/ready never went 503"
    status, head, body = answer
    assert status == 503 and json.loads(body)["draining"] is True
    assert "connection: close" in head
    idle_writer.close()
    # New connections are refused while the charges finish.
    await wait_until(lambda: refuses_connections(port), timeout=5, what="the listener closed")
    assert not all(charge.done() for charge in charges), "the drain must overlap the charges"

    results = await asyncio.gather(*charges)
    assert [status for status, _ in results] == [201] * len(orders), results
    assert all(body["status"] == "CAPTURED" for _, body in results), results
    assert await wait_exit(payments, timeout=10) == 0
    print(f"stopped {time.monotonic() - signalled:.2f} s after SIGTERM, {len(orders)} charges finished")
    for client in clients:
        await client.close()

    # Every charge's event left through the outbox before the process ended.
    captured = await stream_events(harness.nats_url, subject_for("payments"), expect=len(orders), timeout=10,
                                   match=lambda event: event["type"] == "PaymentCaptured"
                                   and event["data"]["order_id"] in orders)
    assert {event["data"]["order_id"] for event in captured} == set(orders)
    lines = payments.log_lines()
    assert any('"drain_started"' in line for line in lines)
    assert errors_logged(payments) == []


async def _all_in_flight(url: str) -> bool:
    return await in_flight(url) >= CONCURRENT_CHARGES


async def test_the_drain_timeout_bounds_the_stop(harness):
    """MICROSHOP_DRAIN_SECONDS is the bound: a request outliving it is cut short (and logged as
    the error it is), and the process still exits 0 soon after."""
    payments, url = await harness.start_payments(drain_seconds=1)
    token = await card_token(url, harness.service_token)
    await set_processor_latency(harness.processor_url, 8000)
    client = KeptAliveClient(url, harness.service_token)
    await client.open()
    charge = asyncio.create_task(client.charge(f"o-{uuid.uuid4().hex[:12]}", token))
    await wait_until(lambda: _some_in_flight(url), timeout=10, what="the charge in flight")

    payments.popen.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert await wait_exit(payments, timeout=6) == 0
    stopped_after = time.monotonic() - signalled
    assert stopped_after < 4, stopped_after  # 1 s of drain, then the parts' own bounded stops
    with pytest.raises(aiohttp.ClientError):
        await charge
    await client.close()
    assert any('"drain_timeout_requests_cancelled"' in line for line in payments.log_lines())


async def _some_in_flight(url: str) -> bool:
    return await in_flight(url) >= 1
