"""API10:2023 Unsafe consumption of APIs: the services consume each other's events, so the
broker is an API too. Nobody connects to it without credentials; a service may publish only its
own events (the audit forged an OrderConfirmed that reports counted and notifications mailed);
and an event that breaks its contract is dead-lettered by its consumers, never acted on."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import nats
import pytest
from microshop_chassis.broker_auth import url_with_credentials
from microshop_chassis.events import STREAM
from microshop_chassis.testing import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBJECT = "events.orders.OrderConfirmed"


def envelope(data: dict) -> bytes:
    return json.dumps({"id": str(uuid.uuid4()), "type": "OrderConfirmed", "version": 1, "source": "orders",
                       "occurred_at": datetime.now(UTC).isoformat(), "data": data}).encode()


async def connect_as(secured, user: str | None, errors: list | None = None):
    async def collect(error):
        if errors is not None:
            errors.append(str(error))

    url = secured.nats_url()
    if user is not None:
        url = url_with_credentials(url, user, secured.broker_passwords()[user])
    return await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3,
                              error_cb=collect)


async def test_the_broker_refuses_a_connection_without_credentials(secured):
    errors: list[str] = []
    with pytest.raises(Exception):  # noqa: B017 - nats-py raises several kinds for a refusal
        connection = await connect_as(secured, None, errors)
        await connection.close()
    assert any("authorization violation" in error.lower() for error in errors), errors


async def test_a_service_cannot_publish_another_services_event(secured):
    errors: list[str] = []
    forged = envelope({"order_id": str(uuid.uuid4()), "customer_id": "x", "customer_email": "victim@example.com",
                       "items": [{"sku": "MUG-STONEWARE-12", "quantity": 1, "unit_price_cents": 1}],
                       "total_cents": 1, "currency": "USD"})
    notifications = await connect_as(secured, "notifications", errors)
    try:
        js = notifications.jetstream()
        with pytest.raises(Exception):  # noqa: B017 - no publish acknowledgement: timeout or no responders
            await js.publish(SUBJECT, forged, timeout=2)

        async def refused() -> bool:
            return any("permissions violation" in error.lower() for error in errors)

        await wait_until(refused, timeout=5, what=f"a permissions violation from the broker (errors: {errors})")
    finally:
        await notifications.close()
    operator = await connect_as(secured, "operator")
    try:
        stream = await operator.jetstream().stream_info(STREAM)
        last = await operator.jetstream().get_last_msg(STREAM, SUBJECT) if stream.state.messages else None
        assert last is None or last.data != forged, "the forged event reached the stream"
    except nats.js.errors.NotFoundError:
        pass  # no OrderConfirmed at all on the stream
    finally:
        await operator.close()


async def dead_letters(secured, service: str) -> int:
    reply = await secured.direct(service, secured.admin.token).get("/admin/messaging")
    assert reply.status == 200, reply.body
    return sum(reply.body["dead_letters"].values())


async def test_an_event_breaking_its_contract_is_dead_lettered(secured):
    before = {service: await dead_letters(secured, service) for service in ("notifications", "reports")}
    orders = await connect_as(secured, "orders")
    try:  # orders' own subject and credentials: only the data is wrong (no order id, no items)
        await orders.jetstream().publish(SUBJECT, envelope({"order_id": "", "items": []}), timeout=5)
    finally:
        await orders.close()
    for service, count in before.items():
        async def parked(service=service, count=count) -> bool:
            return await dead_letters(secured, service) > count

        await wait_until(parked, timeout=20, what=f"{service} dead-lettering the broken OrderConfirmed")
