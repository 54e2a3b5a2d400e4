"""GET /admin/messaging: outbox backlog, consumer lag and dead letters, over real HTTP, a real
JetStream and real SQLite/PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import pytest
from microshop_chassis.app import create_app
from microshop_chassis.auth import JwtVerifier
from microshop_chassis.broker import Broker
from microshop_chassis.consumer import EventConsumer
from microshop_chassis.db import Database
from microshop_chassis.events import Event, subject_for
from microshop_chassis.messaging import MessagingGauges, MessagingReport
from microshop_chassis.outbox import OutboxRelay, add_event
from microshop_chassis.provide import provide
from microshop_chassis.settings import ServiceSettings
from microshop_chassis.tables import chassis_metadata
from microshop_chassis.testing import ApiClient, NatsServer, RunningApp, TokenMint, wait_until


@pytest.fixture(scope="module")
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture
def messaging(unique) -> MessagingReport:
    """The service's report: what the tests start is handed to it, as the service host does."""
    return MessagingReport(unique)


@pytest.fixture
async def service(tmp_path, unique, mint, messaging):
    app = create_app(settings=ServiceSettings(service_name=unique, data_dir=tmp_path), version="1.0.0",
                     messaging=messaging)
    provide(app, JwtVerifier, mint.verifier())
    async with RunningApp(app) as running:
        yield ApiClient(running.url, token=mint.token(role="admin"))


async def _status(api: ApiClient) -> dict:
    reply = await api.get("/admin/messaging")
    assert reply.status == 200, reply.body
    return reply.body


def _consumer(body: dict, durable: str) -> dict:
    [found] = [c for c in body["consumers"] if c["durable"] == durable]
    return found


def _event(source: str, n: int = 0) -> Event:
    return Event(type="ThingHappened", source=source, data={"n": n})


async def _outbox_holding_three(url: str, source: str) -> Database:
    """A database with the chassis' tables and three events waiting in its outbox."""
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(chassis_metadata.create_all)
    async with db.transaction() as session:
        for n in range(3):
            await add_event(session, _event(source, n))
    return db


async def test_no_relay_and_no_consumer(service, unique):
    body = await _status(service)
    assert body == {"service": unique, "outbox": None, "consumers": [], "dead_letters": {}}


async def test_outbox_backlog_until_the_relay_drains_it(database_url, service, nats_server, unique, messaging):
    db = await _outbox_holding_three(database_url, unique)
    # The relay is running but its broker is not connected yet: the rows wait in the outbox.
    broker = Broker(nats_server.url, client_name="chassis-tests")
    relay = messaging.add_relay(OutboxRelay(db, broker, poll_interval=60))
    relay.start()
    try:
        body = await _status(service)
        assert body["outbox"]["backlog"] == 3
        assert body["outbox"]["oldest_age_seconds"] >= 0
        assert body["consumers"] == [] and body["dead_letters"] == {}

        broker.start()

        async def drained():
            outbox = (await _status(service))["outbox"]
            return outbox == {"backlog": 0, "oldest_age_seconds": None}

        await wait_until(drained, timeout=10, what="outbox drained")
    finally:
        await relay.stop()
        await broker.close()
        await db.dispose()
    assert relay not in messaging.running_relays()
    assert (await _status(service))["outbox"] is None


async def test_consumer_lag_until_handled(service, broker, consumers, unique, messaging):
    gate = asyncio.Event()
    handled: list[str] = []

    async def handler(ev: Event) -> None:
        await gate.wait()
        handled.append(ev.id)

    js = await broker.wait_connected()
    for n in range(2):
        ev = _event(unique, n)
        await js.publish(ev.subject, ev.model_dump_json().encode(), headers={"Nats-Msg-Id": ev.id})
    consumer = consumers.start(messaging.add_consumer(EventConsumer(broker, durable=unique,
                                             subjects=[subject_for(unique)], handler=handler, batch_size=1)))

    async def first_in_handler():
        state = _consumer(await _status(service), unique)
        return state if state["num_ack_pending"] == 1 else None

    state = await wait_until(first_in_handler, timeout=10, what="first event delivered")
    assert state["num_pending"] == 1  # the second waits behind the one being handled
    assert state["subjects"] == [subject_for(unique)]
    assert state["delivered_stream_seq"] > state["ack_floor_stream_seq"]

    gate.set()

    async def caught_up():
        state = _consumer(await _status(service), unique)
        return state if state["num_pending"] == 0 and state["num_ack_pending"] == 0 else None

    state = await wait_until(caught_up, timeout=10, what="consumer caught up")
    assert len(handled) == 2
    assert state["ack_floor_stream_seq"] == state["delivered_stream_seq"]
    assert (await _status(service))["dead_letters"] == {unique: 0}

    await consumer.stop()
    assert all(c["durable"] != unique for c in (await _status(service))["consumers"])


async def test_poison_event_is_counted_in_dead_letters(service, broker, consumers, unique, messaging):
    async def handler(ev: Event) -> None:
        raise ValueError("poison")

    consumers.start(messaging.add_consumer(EventConsumer(broker, durable=unique, subjects=[subject_for(unique)],
                                                         handler=handler, max_deliver=2)))
    js = await broker.wait_connected()
    poison = _event(unique)
    await js.publish(poison.subject, poison.model_dump_json().encode(), headers={"Nats-Msg-Id": poison.id})

    async def dead_lettered_and_terminated():
        # The copy to the dead-letter stream lands just before the original's term(): wait for both.
        body = await _status(service)
        state = _consumer(body, unique)
        done = body["dead_letters"].get(unique) == 1 and state["num_ack_pending"] == 0
        return body if done else None

    body = await wait_until(dead_lettered_and_terminated, timeout=10, what="poison event dead-lettered")
    state = _consumer(body, unique)
    # Terminated, not acked as if handled, and nothing left behind it.
    assert body["dead_letters"] == {unique: 1}
    assert state["num_pending"] == 0 and state["num_ack_pending"] == 0


async def test_admin_or_service_only(service, mint):
    for role in ("admin", "service"):
        assert (await service.get("/admin/messaging", token=mint.token(role=role))).status == 200
    customer = await service.get("/admin/messaging", token=mint.token(role="customer"))
    assert customer.status == 403
    assert customer.headers["Content-Type"] == "application/problem+json"
    anonymous = ApiClient(service.base_url)
    assert (await anonymous.get("/admin/messaging")).status == 401


async def test_503_quickly_when_the_broker_is_down(service, tmp_path, unique, messaging):
    server = NatsServer(tmp_path / "nats").start()
    broker = Broker(server.url, client_name="chassis-tests")
    broker.start()
    consumer = None
    try:
        await broker.wait_connected()
        consumer = messaging.add_consumer(EventConsumer(broker, durable=unique, subjects=[subject_for(unique)],
                                                        handler=_ignore))
        consumer.start()
        await wait_until(_durable_listed(service, unique), timeout=10, what="consumer reported")
        server.stop()

        async def unavailable():
            started = time.monotonic()
            reply = await service.get("/admin/messaging")
            return (reply, time.monotonic() - started) if reply.status == 503 else None

        reply, took = await wait_until(unavailable, timeout=10, what="503 with the broker down")
        assert took < 3
        assert reply.headers["Content-Type"] == "application/problem+json"
        assert reply.body["status"] == 503
        assert "broker" in reply.body["detail"]
    finally:
        if consumer is not None:
            await consumer.stop()
        await broker.close()
        server.stop()


async def test_503_at_once_when_the_broker_was_never_reached(service, unique, messaging):
    never = Broker("nats://127.0.0.1:1", client_name="chassis-tests")  # not started: never connects
    consumer = messaging.add_consumer(EventConsumer(never, durable=unique, subjects=[subject_for(unique)],
                                                    handler=_ignore))
    consumer.start()
    try:
        started = time.monotonic()
        reply = await service.get("/admin/messaging")
        assert reply.status == 503
        assert time.monotonic() - started < 1
        assert reply.body["detail"] == "Not connected to the broker at nats://127.0.0.1:1."
    finally:
        await consumer.stop()
        await never.close()


async def test_503_within_the_bound_when_jetstream_does_not_answer(service, broker, consumers, unique,
                                                                    monkeypatch, messaging):
    consumers.start(messaging.add_consumer(EventConsumer(broker, durable=unique, subjects=[subject_for(unique)],
                                                         handler=_ignore)))

    async def hang(*args, **kwargs):
        await asyncio.Event().wait()

    monkeypatch.setattr(broker.js, "consumer_info", hang)
    started = time.monotonic()
    reply = await service.get("/admin/messaging")
    assert reply.status == 503
    assert 1.5 < time.monotonic() - started < 3
    assert "did not answer within 2 s" in reply.body["detail"]


async def _ignore(ev: Event) -> None:
    return None


def _durable_listed(api: ApiClient, durable: str):
    async def check() -> bool:
        reply = await api.get("/admin/messaging")
        return reply.status == 200 and any(
            c["durable"] == durable and c["num_pending"] is not None for c in reply.body["consumers"]
        )

    return check


async def test_the_gauges_are_current_without_anyone_reading_the_report(sqlite_url, nats_server, unique):
    """What Prometheus alerts on (backlog, oldest event's age) is refreshed by a worker of its own."""
    db = await _outbox_holding_three(sqlite_url, unique)
    report = MessagingReport(unique)
    broker = Broker(nats_server.url, client_name="chassis-tests")  # not started: the rows stay
    relay = report.add_relay(OutboxRelay(db, broker, poll_interval=60))
    relay.start()
    gauges = MessagingGauges(report, interval=0.05)
    gauges.start()
    try:
        def gauge(name: str) -> float | None:
            return report.metrics.registry.get_sample_value(name)

        async def refreshed():
            return gauge("outbox_backlog") == 3 and gauge("outbox_oldest_event_age_seconds") > 0

        await wait_until(refreshed, timeout=5, what="the gauges refreshed by the worker")
    finally:
        await gauges.stop()
        await relay.stop()
        await db.dispose()
