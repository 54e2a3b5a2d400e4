"""A three-node NATS cluster keeping the streams three times: killing a node, the stream's leader
included, under a steady flow of events loses none the broker acknowledged (issue 9, item 6)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import nats
import pytest
from microshop_chassis.broker import Broker, ensure_stream, prepare_streams, server_urls
from microshop_chassis.db import Database
from microshop_chassis.events import STREAM, Event, subject_for
from microshop_chassis.outbox import OutboxRelay, add_event
from microshop_chassis.tables import chassis_metadata
from microshop_chassis.testing import NatsCluster, until_answered, wait_until
from nats.js.api import ConsumerConfig
from structlog.testing import capture_logs

EVENTS = 240
# Events published before the leader is killed: the rest flow through the failover.
KILL_AFTER = 60


@pytest.fixture
def cluster(tmp_path):
    nodes = NatsCluster(tmp_path / "nats").start()
    yield nodes
    nodes.stop()


@pytest.fixture
async def db(sqlite_url):
    database = Database(sqlite_url)
    async with database.engine.begin() as conn:
        await conn.run_sync(chassis_metadata.create_all)
    yield database
    await database.dispose()


async def test_killing_the_stream_leader_under_load_loses_no_acknowledged_event(cluster, db, unique):
    broker = Broker(cluster.url, client_name="cluster-test", stream_replicas=3)
    broker.start()
    relay = OutboxRelay(db, broker, poll_interval=0.1)
    try:
        js = await asyncio.wait_for(broker.wait_connected(), 30)
        assert (await js.stream_info(STREAM)).config.num_replicas == 3
        relay.start()
        written: list[str] = []

        async def produce() -> None:
            for n in range(EVENTS):
                event = Event(type="ThingHappened", source=unique, data={"n": n})
                async with db.transaction() as session:
                    await add_event(session, event)
                written.append(event.id)
                await asyncio.sleep(0.01)  # pacing: a steady flow of checkouts, not a wait for anything

        producing = asyncio.create_task(produce())
        await wait_until(lambda: _stored(js, unique, at_least=KILL_AFTER), timeout=20, what="first events stored")
        leader = (await js.stream_info(STREAM)).cluster.leader
        cluster.node(leader).kill()
        await asyncio.wait_for(producing, 30)
        # Acknowledged = deleted from the outbox: the relay deletes a row only once JetStream acked it.
        await wait_until(lambda: _backlog_is_zero(relay), timeout=30, what="every event acknowledged")

        info = await js.stream_info(STREAM)
        assert info.cluster.leader not in (None, leader), "a surviving node leads the stream"
        received = await _consume_once(cluster.url, unique, expect=EVENTS)
        assert Counter(received) == Counter(written), "each acknowledged event delivered exactly once"
        assert info.state.messages == EVENTS  # a publish retried through the failover was deduplicated
    finally:
        await relay.stop()
        await broker.close()


async def _stored(js, source: str, *, at_least: int) -> bool:
    info = await js.stream_info(STREAM, subjects_filter=subject_for(source, "*"))
    return info.state.messages >= at_least


async def _backlog_is_zero(relay: OutboxRelay) -> bool:
    return await relay.backlog() == 0


async def _consume_once(url: str, source: str, *, expect: int) -> list[str]:
    """Read ``source``'s events through a durable pull consumer, acking each; return the event ids
    received, once the consumer has nothing pending nor unacknowledged."""
    nc = await nats.connect(server_urls(url))
    try:
        js = nc.jetstream(timeout=5)
        durable = f"{source}-reader"
        subscription = await until_answered(lambda: js.pull_subscribe(
            subject_for(source, "*"), durable=durable, stream=STREAM, config=ConsumerConfig(ack_wait=30)))
        received: list[str] = []
        deadline = time.monotonic() + 20
        while len(received) < expect and time.monotonic() < deadline:
            try:
                messages = await subscription.fetch(100, timeout=2)
            except nats.errors.TimeoutError:
                continue
            for message in messages:
                received.append(Event.model_validate_json(message.data).id)
                await message.ack_sync()
        info = await until_answered(lambda: js.consumer_info(STREAM, durable))
        assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)
        return received
    finally:
        await nc.close()



async def test_a_stream_with_fewer_replicas_is_reported_then_updated_by_the_operator(cluster):
    await prepare_streams(cluster.url, replicas=1, timeout=30)  # as a process set up for one node made it
    nc = await nats.connect(server_urls(cluster.url))
    try:
        js = nc.jetstream(timeout=5)
        with capture_logs() as logs:
            await ensure_stream(js, replicas=3)  # a service: may not update, says so
        assert (await js.stream_info(STREAM)).config.num_replicas == 1
        mismatch = [entry for entry in logs if entry["event"] == "stream_replicas_mismatch"]
        assert {(entry["stream"], entry["replicas"], entry["wanted"]) for entry in mismatch} >= {(STREAM, 1, 3)}

        await prepare_streams(cluster.url, replicas=3, timeout=30)  # the launcher, as the operator
        assert (await js.stream_info(STREAM)).config.num_replicas == 3
    finally:
        await nc.close()


def test_a_nats_url_may_list_several_servers_and_credentials_never_show():
    url = "nats://orders:s3cret@127.0.0.1:4222, nats://orders:s3cret@127.0.0.1:4223"
    assert server_urls(url) == ["nats://orders:s3cret@127.0.0.1:4222", "nats://orders:s3cret@127.0.0.1:4223"]
    assert Broker(url, "orders").url == "nats://127.0.0.1:4222,nats://127.0.0.1:4223"
    with pytest.raises(ValueError):
        server_urls(" , ")
