"""Durable pull consumers (consumer.py) and the idempotent inbox (inbox.py) on a real JetStream."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
import sqlalchemy as sa
from microshop_chassis.consumer import EventConsumer
from microshop_chassis.db import Database
from microshop_chassis.events import DEAD_LETTER_PREFIX, DEAD_LETTER_STREAM, STREAM, Event, subject_for
from microshop_chassis.inbox import with_inbox
from microshop_chassis.outbox import OutboxRelay, add_event
from microshop_chassis.tables import chassis_metadata, inbox
from microshop_chassis.telemetry import inject_headers, tracer
from microshop_chassis.testing import wait_until
from nats.js.errors import NotFoundError
from opentelemetry.trace import SpanKind

applied_table = sa.Table(
    "applied",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(36), nullable=False),
)


async def publish(broker, event: Event | None = None, *, subject: str | None = None, data: bytes | None = None,
                  msg_id: str | None = None) -> None:
    js = await broker.wait_connected()
    await js.publish(
        subject or event.subject,
        data if data is not None else event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id or (event.id if event else str(uuid.uuid4()))},
    )


def event(source: str, event_type: str = "ThingHappened", **data) -> Event:
    return Event(type=event_type, source=source, data=data)


def _async(predicate):
    async def check():
        return predicate()

    return check


def seen(calls: list, event_id: str):
    async def check() -> bool:
        return event_id in calls

    return check


@pytest.fixture
async def inbox_db(database_url):
    db = Database(database_url)
    async with db.engine.begin() as conn:
        await conn.run_sync(chassis_metadata.create_all)
        await conn.run_sync(applied_table.metadata.create_all)
    yield db
    await db.dispose()


async def test_with_inbox_applies_an_event_once_when_delivered_twice(inbox_db, broker, consumers, unique):
    handled: list[str] = []

    async def apply(session, ev: Event) -> None:
        await session.execute(sa.insert(applied_table).values(event_id=ev.id))

    inner = with_inbox(inbox_db, unique, apply)

    async def handler(ev: Event) -> None:
        await inner(ev)
        handled.append(ev.id)  # after the transaction committed

    consumers.start(EventConsumer(broker, durable=unique, subjects=[subject_for(unique)], handler=handler))
    twice = event(unique, n=1)
    # Two different Nats-Msg-Ids: JetStream stores both, the consumer gets the envelope twice.
    await publish(broker, twice, msg_id="first-" + twice.id)
    await publish(broker, twice, msg_id="second-" + twice.id)
    marker = event(unique, "Marker")
    await publish(broker, marker)
    await wait_until(seen(handled, marker.id), timeout=10, what="marker handled")

    assert Counter(handled)[twice.id] == 2  # delivered (and handled) twice...
    async with inbox_db.session() as session:
        applied = (await session.execute(sa.select(applied_table.c.event_id))).scalars().all()
        recorded = (
            await session.execute(sa.select(inbox.c.event_id, inbox.c.event_type).where(inbox.c.consumer == unique))
        ).all()
    assert sorted(applied) == sorted([twice.id, marker.id])  # ...applied once
    assert sorted(recorded) == sorted([(twice.id, "ThingHappened"), (marker.id, "Marker")])


async def test_inbox_rolls_back_its_record_when_apply_fails(inbox_db, unique):
    async def failing(session, ev: Event) -> None:
        await session.execute(sa.insert(applied_table).values(event_id=ev.id))
        raise RuntimeError("apply failed")

    ev = event(unique)
    with pytest.raises(RuntimeError):
        await with_inbox(inbox_db, unique, failing)(ev)

    calls: list[str] = []

    async def succeeding(session, e: Event) -> None:
        calls.append(e.id)

    # Nothing was recorded, so the retry applies the event.
    await with_inbox(inbox_db, unique, succeeding)(ev)
    assert calls == [ev.id]
    async with inbox_db.session() as session:
        assert (await session.execute(sa.select(applied_table.c.event_id))).scalars().all() == []


async def _dead_letters(read_stream, nats_url: str, durable: str, expect: int):
    return await read_stream(
        nats_url, f"{DEAD_LETTER_PREFIX}.{durable}", stream=DEAD_LETTER_STREAM, until=lambda m: len(m) >= expect
    )


async def test_failing_handler_is_retried_then_dead_lettered_and_others_flow(
    broker, consumers, unique, read_stream, nats_server
):
    calls: list[str] = []
    poison = event(unique, "Poison", n=0)

    async def handler(ev: Event) -> None:
        calls.append(ev.id)
        if ev.id == poison.id:
            raise ValueError("cannot handle this one")

    consumer = consumers.start(
        EventConsumer(broker, durable=unique, subjects=[subject_for(unique)], handler=handler, max_deliver=3)
    )
    await publish(broker, poison)
    behind = event(unique, n=1)
    await publish(broker, behind)
    # The event behind the poison one is not held up by its retries.
    await wait_until(seen(calls, behind.id), timeout=5, what="event behind the poison one")

    [dead] = await _dead_letters(read_stream, nats_server.url, unique, 1)
    assert dead.subject == f"{DEAD_LETTER_PREFIX}.{unique}"
    assert Event.model_validate_json(dead.data) == poison
    assert dead.headers["Microshop-Original-Subject"] == poison.subject
    assert "ValueError: cannot handle this one" in dead.headers["Microshop-Dead-Letter-Reason"]
    assert dead.headers["Microshop-Deliveries"] == "3"

    later = event(unique, n=2)
    await publish(broker, later)
    await wait_until(seen(calls, later.id), timeout=5, what="event after the dead letter")
    assert Counter(calls)[poison.id] == 3  # max_deliver attempts, then no more
    await wait_until(lambda: _pending_is(consumer, 0), timeout=5, what="nothing left pending")


async def _pending_is(consumer: EventConsumer, expected: int) -> bool:
    try:
        return await consumer.pending() == expected
    except NotFoundError:  # the consumer has not created its durable yet
        return False


async def test_a_handler_failing_once_is_retried_and_not_dead_lettered(broker, consumers, unique):
    attempts: list[str] = []
    done: list[str] = []

    async def handler(ev: Event) -> None:
        attempts.append(ev.id)
        if len(attempts) == 1:
            raise ConnectionError("database restarting")
        done.append(ev.id)

    consumer = consumers.start(
        EventConsumer(broker, durable=unique, subjects=[subject_for(unique)], handler=handler, max_deliver=3)
    )
    flaky = event(unique)
    await publish(broker, flaky)
    await wait_until(seen(done, flaky.id), timeout=10, what="event handled on redelivery")
    assert attempts == [flaky.id, flaky.id]
    await wait_until(lambda: _pending_is(consumer, 0), timeout=5, what="acked")


async def test_trace_context_travels_from_the_outbox_to_the_consumer_span(
    sqlite_url, broker, consumers, unique, span_exporter
):
    db = Database(sqlite_url)
    async with db.engine.begin() as conn:
        await conn.run_sync(chassis_metadata.create_all)
    relay = OutboxRelay(db, broker, poll_interval=60)
    relay.start()
    try:
        handled: list[str] = []

        async def handler(ev: Event) -> None:
            handled.append(ev.id)

        consumers.start(EventConsumer(broker, durable=unique, subjects=[subject_for(unique)], handler=handler))
        ev = event(unique)
        with tracer("chassis-tests").start_as_current_span("the request") as request_span:
            async with db.transaction() as session:
                await add_event(session, ev)
        trace_id = request_span.get_span_context().trace_id
        await wait_until(seen(handled, ev.id), timeout=10, what="event consumed")

        async def consumer_span():
            return next((s for s in span_exporter.get_finished_spans()
                         if s.kind == SpanKind.CONSUMER and s.attributes.get("messaging.message.id") == ev.id), None)

        span = await wait_until(consumer_span, timeout=5, what="consumer span")
        assert span.context.trace_id == trace_id  # one trace from the request to the consumer
        # request -> the relay's publish span -> the consumer's span
        [publish] = [s for s in span_exporter.get_finished_spans()
                     if s.kind == SpanKind.PRODUCER and s.attributes.get("messaging.message.id") == ev.id]
        assert publish.parent.span_id == request_span.get_span_context().span_id
        assert publish.name == "publish ThingHappened"
        assert span.parent.span_id == publish.context.span_id
        assert span.name == "consume ThingHappened"
        assert span.attributes["messaging.consumer.group.name"] == unique
    finally:
        await relay.stop()
        await db.dispose()


async def test_unparseable_message_is_dead_lettered_at_once(broker, consumers, unique, read_stream, nats_server):
    calls: list[str] = []

    async def handler(ev: Event) -> None:
        calls.append(ev.id)

    consumers.start(
        EventConsumer(broker, durable=unique, subjects=[subject_for(unique)], handler=handler, max_deliver=5)
    )
    garbage_subject = subject_for(unique, "Garbage")
    await publish(broker, subject=garbage_subject, data=b"{not json")
    good = event(unique)
    await publish(broker, good)

    [dead] = await _dead_letters(read_stream, nats_server.url, unique, 1)
    assert dead.data == b"{not json"
    assert dead.headers["Microshop-Original-Subject"] == garbage_subject
    assert dead.headers["Microshop-Dead-Letter-Reason"].startswith("unparseable event")
    assert dead.headers["Microshop-Deliveries"] == "1"  # no retries for what cannot parse
    await wait_until(seen(calls, good.id), timeout=5, what="good event handled")
    assert calls == [good.id]


async def test_batch_handler_applies_a_batch_in_one_call_and_acks(broker, consumers, unique):
    events = [event(unique, n=n) for n in range(5)]
    for ev in events:  # all stored before the consumer's first fetch
        await publish(broker, ev)
    consumer, batches, singles = _recording_batches(consumers, broker, unique)
    await wait_until(_async(lambda: batches), timeout=10, what="batch handled")
    await wait_until(lambda: _pending_is(consumer, 0), timeout=10, what="batch acked")
    assert batches == [[ev.id for ev in events]]
    assert singles == []


async def test_each_batched_event_has_a_consumer_span_in_its_own_trace_linked_to_the_batch(
    broker, consumers, unique, span_exporter
):
    js = await broker.wait_connected()
    events, requests = [event(unique, n=n) for n in range(3)], []
    for ev in events:  # three requests, three traces, one batch
        with tracer("chassis-tests").start_as_current_span(f"request {ev.id}") as request:
            await js.publish(ev.subject, ev.model_dump_json().encode(),
                             headers={**inject_headers({}), "Nats-Msg-Id": ev.id})
        requests.append(request.get_span_context())
    batches: list[int] = []

    async def batch_handler(batch: list[Event]) -> None:
        batches.append(len(batch))

    async def one_by_one(_: Event) -> None:
        raise AssertionError("the batch was applied at once")

    consumers.start(EventConsumer(broker, durable=unique, subjects=[subject_for(unique)], handler=one_by_one,
                                  batch_handler=batch_handler, batch_size=10))
    await wait_until(_async(lambda: batches), timeout=10, what="batch handled")

    async def per_event_spans():
        spans = [s for s in span_exporter.get_finished_spans()
                 if s.kind == SpanKind.CONSUMER and s.attributes.get("messaging.message.id") in {e.id for e in events}]
        return spans if len(spans) == 3 else None

    spans = await wait_until(per_event_spans, timeout=5, what="a consumer span per event")
    [batch] = [s for s in span_exporter.get_finished_spans() if s.name == "consume batch of 3"]
    for request, ev in zip(requests, events, strict=True):
        [span] = [s for s in spans if s.attributes["messaging.message.id"] == ev.id]
        assert span.context.trace_id == request.trace_id and span.parent.span_id == request.span_id
        assert [link.context.span_id for link in span.links] == [batch.context.span_id]
    assert {link.context.trace_id for link in batch.links} == {request.trace_id for request in requests}


async def test_batch_linger_gathers_a_trickle_into_one_batch(broker, consumers, unique):
    """With batch_linger, an event that arrives while the consumer is idle waits a moment for
    company, so events published one after another are applied together."""
    consumer, batches, singles = _recording_batches(consumers, broker, unique, batch_linger=1.0)
    await wait_until(lambda: _pending_is(consumer, 0), timeout=10, what="consumer subscribed")
    first, second = event(unique, n=1), event(unique, n=2)
    await publish(broker, first)
    await publish(broker, second)
    await wait_until(_async(lambda: batches or singles), timeout=10, what="events handled")
    assert batches == [[first.id, second.id]] and singles == []


async def test_batch_linger_keeps_gathering_until_the_linger_has_passed(broker, consumers, unique):
    """Each event of the trickle is published only once the consumer holds the one before it
    (delivered, not acked): one fetch that returns at the first arrival would make two batches."""
    consumer, batches, singles = _recording_batches(consumers, broker, unique, batch_linger=30.0)
    await wait_until(lambda: _pending_is(consumer, 0), timeout=10, what="consumer subscribed")
    trickle = [event(unique, n=n) for n in range(4)]
    for held, ev in enumerate(trickle, start=1):
        await publish(broker, ev)
        await wait_until(lambda held=held: _held_is(consumer, held), timeout=10, what=f"{held} held")
    assert batches == [] and singles == []  # all four held, lingering for more
    for ev in (event(unique, n=n) for n in range(4, 10)):  # the batch fills: no need to linger on
        await publish(broker, ev)
    await wait_until(_async(lambda: batches or singles), timeout=10, what="the full batch handled")
    assert len(batches) == 1 and len(batches[0]) == 10 and singles == []


async def test_batch_linger_does_not_hold_a_lone_event_longer_than_the_linger(broker, consumers, unique):
    handled: list[float] = []

    async def batch_handler(batch: list[Event]) -> None:
        raise AssertionError("a lone event is no batch")

    async def handler(ev: Event) -> None:
        handled.append(asyncio.get_running_loop().time())

    linger = 0.3
    consumer = consumers.start(
        EventConsumer(broker, durable=unique, subjects=[subject_for(unique)], handler=handler,
                      batch_handler=batch_handler, batch_size=10, batch_linger=linger)
    )
    await wait_until(lambda: _pending_is(consumer, 0), timeout=10, what="consumer subscribed")
    published = asyncio.get_running_loop().time()
    await publish(broker, event(unique, n=1))
    await wait_until(_async(lambda: handled), timeout=10, what="the event handled")
    assert linger * 0.9 <= handled[0] - published < linger + 1.0  # it lingered, and no longer than that


def _recording_batches(consumers, broker, unique: str, **options) -> tuple[EventConsumer, list[list[str]], list[str]]:
    """A started consumer with a batch handler (batches of 10), and what it got: the ids of each
    batch applied at once, and of each event handled alone."""
    batches: list[list[str]] = []
    singles: list[str] = []

    async def batch_handler(batch: list[Event]) -> None:
        batches.append([ev.id for ev in batch])

    async def handler(ev: Event) -> None:
        singles.append(ev.id)

    consumer = consumers.start(
        EventConsumer(broker, durable=unique, subjects=[subject_for(unique)], handler=handler,
                      batch_handler=batch_handler, batch_size=10, **options)
    )
    return consumer, batches, singles


async def _held_is(consumer: EventConsumer, expected: int) -> bool:
    """Delivered to the consumer and not yet acked: what it holds while it lingers."""
    js = await consumer.broker.wait_connected()
    return (await js.consumer_info(STREAM, consumer.durable)).num_ack_pending == expected


async def test_batch_with_a_poison_event_falls_back_to_one_by_one(
    broker, consumers, unique, read_stream, nats_server
):
    events = [event(unique, n=n) for n in range(4)]
    poison = events[2]
    for ev in events:
        await publish(broker, ev)
    batch_calls: list[list[str]] = []
    applied: list[str] = []

    async def batch_handler(batch: list[Event]) -> None:
        batch_calls.append([ev.id for ev in batch])
        if any(ev.id == poison.id for ev in batch):
            raise ValueError("poison in batch")  # one transaction: nothing of the batch applied
        applied.extend(ev.id for ev in batch)

    async def handler(ev: Event) -> None:
        if ev.id == poison.id:
            raise ValueError("poison")
        applied.append(ev.id)

    consumer = consumers.start(
        EventConsumer(broker, durable=unique, subjects=[subject_for(unique)], handler=handler,
                      batch_handler=batch_handler, batch_size=10, max_deliver=2)
    )
    [dead] = await _dead_letters(read_stream, nats_server.url, unique, 1)
    assert Event.model_validate_json(dead.data).id == poison.id
    await wait_until(lambda: _pending_is(consumer, 0), timeout=10, what="all acked or terminated")
    assert sorted(applied) == sorted(ev.id for ev in events if ev is not poison)
    assert batch_calls[0] == [ev.id for ev in events]


async def test_a_new_consumer_on_the_same_durable_gets_events_at_once_after_stop(broker, unique):
    first_calls: list[str] = []
    second_calls: list[str] = []

    async def first_handler(ev: Event) -> None:
        first_calls.append(ev.id)

    async def second_handler(ev: Event) -> None:
        second_calls.append(ev.id)

    first = EventConsumer(broker, durable=unique, subjects=[subject_for(unique)], handler=first_handler,
                          ack_wait=30)
    first.start()
    try:
        warm = event(unique, n=0)
        await publish(broker, warm)
        await wait_until(seen(first_calls, warm.id), timeout=5, what="first consumer running")
    finally:
        await first.stop()  # while its next fetch is waiting at the server

    after = event(unique, n=1)
    await publish(broker, after)
    second = EventConsumer(broker, durable=unique, subjects=[subject_for(unique)], handler=second_handler,
                           ack_wait=30)
    second.start()
    try:
        # Well within ack_wait: had the stopped consumer's pull request taken the event, it
        # would come back only after 30 s.
        await wait_until(seen(second_calls, after.id), timeout=5, what="event delivered to the new consumer")
    finally:
        await second.stop()
    assert first_calls == [warm.id]
    assert second_calls == [after.id]
