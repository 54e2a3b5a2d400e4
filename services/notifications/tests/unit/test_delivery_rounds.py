"""The delivery worker's rounds against an in-memory mail server: what is sent, what waits, and
when it is tried again."""

from datetime import timedelta

from microshop_chassis.db import utcnow
from microshop_chassis.testing import wait_until
from microshop_notifications.delivery import DeliveryWorker
from microshop_notifications.domain import retry_delay


async def record_orders(world, count: int) -> list:
    for _ in range(count):
        await world.notifications.record(world.events.order("OrderConfirmed"))
    return sorted(await world.all(), key=lambda n: (n.created_at, n.id))


async def by_id(world) -> dict:
    return {n.id: n for n in await world.all()}


async def test_a_round_sends_the_oldest_due_and_marks_them_sent(world):
    recorded = await record_orders(world, 2)
    assert await world.delivery.round() is False  # not a full batch: nothing more is due
    assert world.mail.recipients() == [n.recipient for n in recorded]
    assert world.mail.connections == 1
    message = world.mail.sent[0]
    assert message["Message-ID"] == f"<notification-{recorded[0].id}@microshop.local>"
    assert message["X-Microshop-Event-Type"] == "OrderConfirmed"
    stored = await by_id(world)
    assert all(stored[n.id].status == "SENT" and stored[n.id].sent_at for n in recorded)
    assert await world.notifications.pending_count() == 0
    assert world.attempts("sent") == 2 and world.attempts("failed") == 0


async def test_a_full_batch_asks_for_another_round_at_once(world):
    await record_orders(world, 4)
    assert await world.delivery.round() is True
    assert await world.delivery.round() is False
    assert len(world.mail.sent) == 4 and world.mail.connections == 2


async def test_one_refused_recipient_waits_while_the_rest_is_sent(world):
    first, second = await record_orders(world, 2)
    world.mail.refused = {first.recipient}
    before = utcnow()
    assert await world.delivery.deliver_due() == 2
    assert world.mail.recipients() == [second.recipient]
    stored = await by_id(world)
    refused, sent = stored[first.id], stored[second.id]
    assert (sent.status, sent.attempts) == ("SENT", 0)
    assert (refused.status, refused.attempts) == ("PENDING", 1) and "550" in refused.last_error
    assert refused.next_attempt_at >= before + timedelta(seconds=1)  # retry_backoff after the first failure
    assert world.attempts("sent") == 1 and world.attempts("failed") == 1
    assert await world.delivery.deliver_due() == 0  # it waits out its backoff


async def test_a_lost_connection_leaves_the_rest_of_the_batch_pending(world):
    first, second, third = await record_orders(world, 3)
    world.mail.hang_up_after = 1
    assert await world.delivery.deliver_due() == 3
    stored = await by_id(world)
    assert stored[first.id].status == "SENT"
    for waiting in (stored[second.id], stored[third.id]):
        assert (waiting.status, waiting.attempts) == ("PENDING", 1)
        assert "connection lost" in waiting.last_error
    assert world.attempts("failed") == 2


async def test_a_mail_server_away_delays_mail_and_never_loses_it(world):
    [notification] = await record_orders(world, 1)
    world.mail.down = True
    assert await world.delivery.round() is False
    stored = (await by_id(world))[notification.id]
    assert (stored.status, stored.attempts) == ("PENDING", 1) and "ConnectionRefusedError" in stored.last_error
    assert world.mail.sent == []


async def test_failed_attempts_back_off_exponentially_and_are_retried_when_due(world):
    [notification] = await record_orders(world, 1)
    # Long enough that "not due yet" holds on a busy machine, short enough for a quick test.
    world.notifications.retry_backoff = 0.2

    async def claim():
        return await world.notifications.claim_due(limit=10, lease_seconds=60)

    for attempts in (1, 2, 3):
        [claimed] = await wait_until(claim, timeout=10, what="the notification due again")
        before = utcnow()
        await world.notifications.mark_failed([claimed], "SMTPServerDisconnected: gone")
        stored = (await by_id(world))[notification.id]
        assert stored.attempts == attempts and stored.status == "PENDING"
        delay = retry_delay(attempts, base=0.2, cap=300.0)
        assert before + timedelta(seconds=delay) <= stored.next_attempt_at <= utcnow() + timedelta(seconds=delay)
        assert await claim() == []  # not due yet
    assert await wait_until(world.delivery.deliver_due, timeout=10, what="the last retry") == 1
    stored = (await by_id(world))[notification.id]
    assert (stored.status, stored.attempts) == ("SENT", 3)  # failures are history, not reset


async def test_a_claimed_batch_is_leased_to_one_worker(world):
    await record_orders(world, 2)
    claimed = await world.notifications.claim_due(limit=10, lease_seconds=60)
    assert len(claimed) == 2
    assert await world.notifications.claim_due(limit=10, lease_seconds=60) == []  # another replica's claim


async def test_a_restarted_worker_takes_over_what_a_killed_one_had_leased(world):
    """A worker killed mid-batch leaves its rows leased for two minutes. The next process of a
    SQLite database is the only one: its first round sends them at once; a replica sharing a
    database (take_over_at_start off) leaves another live worker's lease alone."""
    [notification] = await record_orders(world, 1)
    killed = await world.notifications.claim_due(limit=10, lease_seconds=120)  # then never sent
    assert [n.id for n in killed] == [notification.id]

    def restarted(take_over: bool) -> DeliveryWorker:
        return DeliveryWorker(world.notifications, world.mail, mail_from="shop <shop@microshop.local>",
                              batch_size=10, interval=1.0, lease_seconds=60, take_over_at_start=take_over)

    replica = restarted(take_over=False)
    assert await replica.deliver_due() == 0 and world.mail.sent == []
    successor = restarted(take_over=True)
    assert await successor.deliver_due() == 1
    assert world.mail.recipients() == [notification.recipient]
    assert (await by_id(world))[notification.id].status == "SENT"
    assert await successor.deliver_due() == 0  # only its first round ignores leases
