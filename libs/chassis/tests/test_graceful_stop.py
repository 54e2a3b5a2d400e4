"""The host's graceful stop (host.begin_drain, then the lifespan's end) on a real JetStream and a
real SQLite file: a consumer acks the message in hand, the relay publishes what was committed,
a worker's round in hand finishes. (The HTTP half, with a real process and SIGTERM, is in
tests/lifecycle.)"""

from __future__ import annotations

import asyncio

from microshop_chassis.background import BackgroundWorker
from microshop_chassis.events import STREAM, Event, subject_for
from microshop_chassis.host import ServiceHost
from microshop_chassis.outbox import add_event
from microshop_chassis.settings import ServiceSettings
from microshop_chassis.tables import chassis_metadata
from microshop_chassis.testing import wait_until


def host_for(tmp_path, nats_server, *, drain_seconds: float = 5.0) -> ServiceHost:
    settings = ServiceSettings(service_name="drainer", nats_url=nats_server.url, data_dir=tmp_path,
                               drain_seconds=drain_seconds)
    return ServiceHost(settings, version="1", verifies_tokens=False)


def running(host: ServiceHost):
    return host.app.router.lifespan_context(host.app)


async def test_a_consumer_mid_message_at_the_stop_finishes_and_acks_it(tmp_path, nats_server, broker, unique):
    host = host_for(tmp_path, nats_server)
    release = asyncio.Event()
    started: list[str] = []
    handled: list[str] = []

    async def slow_handler(event: Event) -> None:
        started.append(event.id)
        await release.wait()
        handled.append(event.id)

    host.consumer(host.broker(), durable=unique, subjects=[subject_for(unique)], handler=slow_handler)
    in_hand = Event(type="ThingHappened", source=unique, data={})
    lifespan = running(host)
    await lifespan.__aenter__()
    js = await broker.wait_connected()
    await js.publish(in_hand.subject, in_hand.model_dump_json().encode(), headers={"Nats-Msg-Id": in_hand.id})
    await wait_until(lambda: _true(started), timeout=10, what="the handler started")

    host.begin_drain()  # SIGTERM
    stopping = asyncio.create_task(lifespan.__aexit__(None, None, None))
    later = Event(type="ThingHappened", source=unique, data={})
    await js.publish(later.subject, later.model_dump_json().encode(), headers={"Nats-Msg-Id": later.id})
    await asyncio.sleep(0)  # the stop is under way, waiting for the handler
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, 10)

    assert handled == [in_hand.id]  # finished, not cancelled
    info = await js.consumer_info(STREAM, unique)
    # Acked before the stop ended: never redelivered, to this process or another member. The event
    # published once the drain began was not taken: it waits for the next member.
    assert info.num_ack_pending == 0 and info.num_redelivered == 0
    assert info.ack_floor.stream_seq == info.delivered.stream_seq
    assert info.num_pending == 1


async def test_the_relay_publishes_what_was_committed_before_the_stop(tmp_path, nats_server, read_stream, unique):
    host = host_for(tmp_path, nats_server)
    db = host.database()
    host.on_start(lambda: _create_tables(db), "tables")
    broker = host.broker()
    host.outbox_relay(db, broker)
    last_word = Event(type="ThingHappened", source=unique, data={"n": 1})

    async def commit_at_stop() -> None:  # a part stopped before the relay writes its last event
        async with db.transaction() as session:
            await add_event(session, last_word)

    host.on_stop(commit_at_stop, "last-word")
    async with running(host):
        await broker.wait_connected()

    found = await read_stream(nats_server.url, subject_for(unique), until=lambda messages: len(messages) >= 1)
    assert [message.json()["id"] for message in found] == [last_word.id]


async def test_a_worker_round_in_hand_finishes_within_the_drain_time(tmp_path, nats_server):
    host = host_for(tmp_path, nats_server, drain_seconds=5)
    worker = host.worker(SlowRound())
    async with running(host):
        await worker.in_round.wait()
        host.begin_drain()
        worker.release.set()
    assert worker.rounds_finished == 1


async def test_a_round_outliving_the_drain_time_is_cancelled(tmp_path, nats_server):
    host = host_for(tmp_path, nats_server, drain_seconds=0.2)
    worker = host.worker(SlowRound())
    async with running(host):
        await worker.in_round.wait()
    assert worker.rounds_finished == 0 and worker.cancelled


class SlowRound(BackgroundWorker):
    name = "slow-round"

    def __init__(self) -> None:
        self.in_round = asyncio.Event()
        self.release = asyncio.Event()
        self.rounds_finished = 0
        self.cancelled = False

    async def round(self) -> bool:
        self.in_round.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.rounds_finished += 1
        return False


async def _create_tables(db) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(chassis_metadata.create_all)


async def _true(items: list) -> bool:
    return bool(items)
