"""The transactional outbox and its relay, against real SQLite/PostgreSQL and a real JetStream."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from microshop_chassis.broker import Broker
from microshop_chassis.db import Database
from microshop_chassis.events import Event, subject_for
from microshop_chassis.outbox import OutboxRelay, add_event
from microshop_chassis.tables import chassis_metadata, outbox
from microshop_chassis.testing import NatsServer, wait_until


async def _chassis_schema(url: str) -> Database:
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(chassis_metadata.create_all)
    return db


@pytest.fixture
async def db(database_url):
    database = await _chassis_schema(database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def sqlite_db(sqlite_url):
    database = await _chassis_schema(sqlite_url)
    yield database
    await database.dispose()


@pytest.fixture
async def relays():
    started: list[OutboxRelay] = []

    def start(relay: OutboxRelay) -> OutboxRelay:
        relay.start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        await relay.stop()


def _event(source: str, n: int, event_type: str = "ThingHappened") -> Event:
    return Event(type=event_type, source=source, data={"n": n})


async def test_committed_events_are_published_in_order_with_msg_id_and_deleted(
    db, broker, relays, unique, read_stream, nats_server
):
    first = [_event(unique, n) for n in range(3)]
    second = [_event(unique, n, "OtherThing") for n in range(3, 5)]
    async with db.transaction() as session:
        for event in first:
            await add_event(session, event)
    async with db.transaction() as session:
        for event in second:
            await add_event(session, event)
    # Batches of 2: the relay keeps going while batches come back full, so all 5 leave at once.
    relay = relays(OutboxRelay(db, broker, batch_size=2, poll_interval=60))

    written = first + second
    messages = await read_stream(nats_server.url, subject_for(unique, "*"), until=lambda m: len(m) >= 5)
    assert [m.headers.get("Nats-Msg-Id") for m in messages] == [e.id for e in written]
    assert [m.subject for m in messages] == [e.subject for e in written]
    for message, event in zip(messages, written, strict=True):
        assert Event.model_validate_json(message.data) == event
    await wait_until(lambda: _backlog_is(relay, 0), timeout=5, what="outbox rows deleted")
    async with db.session() as session:
        assert (await session.execute(sa.select(sa.func.count()).select_from(outbox))).scalar_one() == 0


async def _backlog_is(relay: OutboxRelay, expected: int) -> bool:
    return await relay.backlog() == expected


async def test_rolled_back_transaction_publishes_nothing(db, broker, relays, unique, read_stream, nats_server):
    relay = relays(OutboxRelay(db, broker, poll_interval=60))
    doomed = _event(unique, 1)
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await add_event(session, doomed)
            raise RuntimeError("the change failed")
    assert await relay.backlog() == 0

    marker = _event(unique, 2, "Marker")
    async with db.transaction() as session:
        await add_event(session, marker)
    messages = await read_stream(
        nats_server.url, subject_for(unique, "*"), until=lambda m: any(x.json()["id"] == marker.id for x in m)
    )
    assert [m.json()["id"] for m in messages] == [marker.id]


async def test_relay_is_woken_by_commit_not_by_polling(sqlite_db, broker, relays, unique, read_stream, nats_server):
    # The first event is there before the relay starts: its first pass publishes it.
    early = _event(unique, 1)
    async with sqlite_db.transaction() as session:
        await add_event(session, early)
    relays(OutboxRelay(sqlite_db, broker, poll_interval=60))
    await read_stream(nats_server.url, subject_for(unique, "*"), until=lambda m: len(m) == 1)

    # Now the relay sleeps for 60 s unless the commit wakes it.
    late = _event(unique, 2)
    async with sqlite_db.transaction() as session:
        await add_event(session, late)
    messages = await read_stream(nats_server.url, subject_for(unique, "*"), until=lambda m: len(m) == 2, timeout=10)
    assert [m.json()["id"] for m in messages] == [early.id, late.id]


async def test_republishing_an_event_id_is_deduplicated_by_jetstream(
    sqlite_db, broker, relays, unique, read_stream, nats_server
):
    relay = relays(OutboxRelay(sqlite_db, broker, poll_interval=60))
    event = _event(unique, 1)
    for _ in range(2):  # as after a relay crash between publish and delete
        async with sqlite_db.transaction() as session:
            await add_event(session, event)
        # The row is gone only once JetStream acknowledged the publish.
        await wait_until(lambda: _backlog_is(relay, 0), timeout=10, what="event published")

    marker = _event(unique, 2, "Marker")
    async with sqlite_db.transaction() as session:
        await add_event(session, marker)
    messages = await read_stream(
        nats_server.url, subject_for(unique, "*"), until=lambda m: any(x.json()["id"] == marker.id for x in m)
    )
    assert [m.json()["id"] for m in messages] == [event.id, marker.id]


async def test_events_written_while_the_broker_is_down_are_published_when_it_returns(
    sqlite_db, relays, unique, read_stream, tmp_path
):
    store = tmp_path / "nats"
    store.mkdir()
    server = NatsServer(store).start()
    broker = Broker(server.url, client_name="outage-test")
    try:
        broker.start()
        await broker.wait_connected()
        relay = OutboxRelay(sqlite_db, broker, poll_interval=0.2)
        # Watch the relay's attempts without changing what they do.
        outcomes: list[str] = []
        original = relay.publish_batch

        async def observed_publish_batch() -> int:
            try:
                count = await original()
            except Exception as exc:
                outcomes.append(f"failed: {type(exc).__name__}")
                raise
            outcomes.append(f"published {count}")
            return count

        relay.publish_batch = observed_publish_batch  # type: ignore[method-assign]
        relays(relay)

        before = _event(unique, 0)
        async with sqlite_db.transaction() as session:
            await add_event(session, before)
        await read_stream(server.url, subject_for(unique, "*"), until=lambda m: len(m) == 1)

        await broker.ping()
        server.stop()
        await wait_until(_async(lambda: not broker.nc.is_connected), timeout=10, what="client sees the outage")
        with pytest.raises(ConnectionError):
            await broker.ping()  # readiness says so
        during = [_event(unique, n) for n in (1, 2)]
        async with sqlite_db.transaction() as session:
            for event in during:
                await add_event(session, event)
        await wait_until(
            _async(lambda: any(o.startswith("failed") for o in outcomes)), timeout=15, what="a failed publish"
        )
        assert await relay.backlog() == 2  # kept while the broker is away

        server.start()  # same port, same store
        await wait_until(lambda: _backlog_is(relay, 0), timeout=15, what="outbox drained after the outage")
        marker = _event(unique, 3, "Marker")
        async with sqlite_db.transaction() as session:
            await add_event(session, marker)
        messages = await read_stream(
            server.url, subject_for(unique, "*"), until=lambda m: any(x.json()["id"] == marker.id for x in m)
        )
        await broker.ping()
        # Each once, in order: a publish buffered by the client during the outage and the relay's
        # retry of it carry one Nats-Msg-Id, and JetStream keeps one.
        assert [m.json()["id"] for m in messages] == [before.id, *(e.id for e in during), marker.id]
    finally:
        await broker.close()
        server.stop()


def _async(predicate):
    async def check():
        return predicate()

    return check
