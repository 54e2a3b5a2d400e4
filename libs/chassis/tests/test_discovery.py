"""Replicas announce themselves on the real broker and callers spread over them (discovery.py), and
a call fails over from a replica that is dead or draining (http_client.py)."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from microshop_chassis.broker import Broker
from microshop_chassis.discovery import Directory, FixedEndpoint, Instance, Replicas
from microshop_chassis.downstream import ServiceUnavailable
from microshop_chassis.http_client import ServiceClient
from microshop_chassis.testing import free_port, wait_until

HEARTBEAT = 0.1  # a dead replica is forgotten after three missed ones


@asynccontextmanager
async def connected(nats_server, user: str):
    broker = Broker(nats_server.url_for(user), client_name=f"test-{user}", streams=False)
    broker.start()
    await asyncio.wait_for(broker.ready.wait(), 10)
    try:
        yield broker
    finally:
        await broker.close()


@asynccontextmanager
async def replica(nats_server, service: str, instance: str, url: str, *, ready=lambda: True, user: str | None = None):
    async with connected(nats_server, user or service) as broker:
        directory = Directory(broker, heartbeat=HEARTBEAT)

        async def is_ready() -> bool:
            return ready()

        directory.announce_as(service, instance, url, "1.0", is_ready)
        directory.start()
        try:
            yield directory
        finally:
            await directory.stop()


@asynccontextmanager
async def caller(nats_server, service: str = "orders"):
    async with connected(nats_server, service) as broker:
        directory = Directory(broker, heartbeat=HEARTBEAT)
        directory.start()
        try:
            yield directory
        finally:
            await directory.stop()


async def urls_become(replicas: Replicas, expected: set[str], what: str, timeout: float = 5.0) -> None:
    async def seen() -> bool:
        return set(replicas.urls()) == expected
    await wait_until(seen, timeout=timeout, what=what, interval=0.005)


async def test_a_caller_learns_every_ready_replica_and_forgets_one_that_drains_or_dies(nats_server):
    async with caller(nats_server) as orders:
        payments = orders.replicas("payments", "http://fallback:1")
        assert payments.pick() == "http://fallback:1"  # nothing heard yet: the configured URL
        async with replica(nats_server, "payments", "payments", "http://127.0.0.1:1001") as first, \
                replica(nats_server, "payments", "payments-2", "http://127.0.0.1:1002"):
            await urls_become(payments, {"http://127.0.0.1:1001", "http://127.0.0.1:1002"}, "both replicas")
            assert first.announced
            await first.draining()
            # Within one message's delivery, well before an expiry (three heartbeats) could explain it.
            await urls_become(payments, {"http://127.0.0.1:1002"}, "the draining replica dropped",
                              timeout=2 * HEARTBEAT)
        await urls_become(payments, set(), "the stopped replica's goodbye")
        assert payments.pick() == "http://fallback:1"


async def test_a_replica_that_stops_announcing_is_forgotten_after_three_heartbeats(nats_server):
    async with caller(nats_server) as orders:
        payments = orders.replicas("payments", "http://fallback:1")
        async with replica(nats_server, "payments", "payments-9", "http://127.0.0.1:1009") as silent:
            await urls_become(payments, {"http://127.0.0.1:1009"}, "the replica")
            silent._task.cancel()  # as SIGKILL would: no goodbye, no more heartbeats
            silent._me = None
            await urls_become(payments, set(), "the silent replica expiring")


async def test_a_newcomer_hears_every_replica_within_a_round_trip(nats_server):
    async with replica(nats_server, "inventory", "inventory", "http://127.0.0.1:1101"):
        async with caller(nats_server) as orders:
            inventory = orders.replicas("inventory", "http://fallback:1")
            await urls_become(inventory, {"http://127.0.0.1:1101"}, "the answer to hello")


async def test_a_replica_announces_only_once_ready(nats_server):
    ready = False
    async with caller(nats_server) as orders:
        users = orders.replicas("users", "http://fallback:1")
        async with replica(nats_server, "users", "users-2", "http://127.0.0.1:1201", ready=lambda: ready) as me:
            await asyncio.sleep(3 * HEARTBEAT)  # three heartbeats in which it was not ready
            assert users.urls() == [] and not me.announced
            ready = True
            await urls_become(users, {"http://127.0.0.1:1201"}, "the replica once ready")


async def test_a_service_cannot_announce_itself_as_another(nats_server):
    async with caller(nats_server) as orders:
        payments = orders.replicas("payments", "http://fallback:1")
        # notifications' broker user may publish its own announcements only.
        async with replica(nats_server, "payments", "impostor", "http://127.0.0.1:6666", user="notifications"), \
                replica(nats_server, "payments", "payments", "http://127.0.0.1:1001"):
            await urls_become(payments, {"http://127.0.0.1:1001"}, "the real replica")
            await asyncio.sleep(3 * HEARTBEAT)
            assert payments.urls() == ["http://127.0.0.1:1001"]


# --- the client over replicas --------------------------------------------------------------------


@asynccontextmanager
async def backend(name: str):
    """A real HTTP server answering its own name, counting what it got."""
    served: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        served.append(request.method)
        return web.json_response({"replica": name})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", served
    finally:
        await runner.cleanup()


def replicas_of(*urls: str) -> Replicas:
    replicas = Replicas("payments", "http://fallback:1", expire_after=60)
    for index, url in enumerate(urls):
        replicas.heard(Instance(f"payments-{index}", url, "1.0", "ready", heard=float("inf")))
    return replicas


async def test_calls_spread_over_the_replicas():
    async with backend("a") as (a, served_a), backend("b") as (b, served_b):
        client = ServiceClient("payments", replicas_of(a, b), breaker=False, retry_budget=False)
        try:
            for _ in range(40):
                assert (await client.get("/x")).ok
        finally:
            await client.close()
    assert len(served_a) + len(served_b) == 40
    assert min(len(served_a), len(served_b)) >= 8, (len(served_a), len(served_b))


async def test_a_post_refused_at_connect_goes_to_another_replica_and_the_dead_one_is_not_chosen_again():
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: refused, so the request never left
    async with backend("alive") as (alive, served):
        replicas = replicas_of(dead, alive)
        client = ServiceClient("payments", replicas, breaker=False, retry_budget=False)
        try:
            for _ in range(10):  # a POST without an idempotency key: not safe to repeat once sent
                reply = await client.post("/charges", json_body={})
                assert reply.ok and reply.body == {"replica": "alive"}
            assert replicas.in_flight.get(dead, 0) == 0
            assert dead in replicas.ejected
        finally:
            await client.close()
    assert served == ["POST"] * 10


async def test_with_one_address_a_refused_post_fails_without_a_retry():
    client = ServiceClient("payments", FixedEndpoint(f"http://127.0.0.1:{free_port()}"), breaker=False,
                           retry_budget=False)
    try:
        with pytest.raises(ServiceUnavailable) as failure:
            await client.post("/charges", json_body={})
        assert failure.value.sent is False
    finally:
        await client.close()
