"""API1:2023 Broken object level authorization: one customer cannot read or act on another's
order, payment or notifications, whether through the gateway or on the service's own port. A
foreign object answers exactly as a missing one (404), so its existence does not leak either."""

from __future__ import annotations

import pytest
from microshop_chassis.testing import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="session")
def alice(secured):
    return secured.customers["alice"]


@pytest.fixture(scope="session")
def mallory(secured):
    return secured.customers["mallory"]


async def alices_confirmed_order(secured, alice) -> str:
    placed = await secured.order(alice.token)
    assert placed.status == 201 and placed.body["status"] == "CONFIRMED", placed.body
    return placed.body["id"]


async def test_a_customer_cannot_read_or_cancel_anothers_order(secured, alice, mallory):
    order_id = await alices_confirmed_order(secured, alice)
    as_mallory = secured.gateway(mallory.token)
    secured.assert_problem(await as_mallory.get(f"/api/orders/{order_id}"), 404, "order-not-found")
    secured.assert_problem(await as_mallory.post(f"/api/orders/{order_id}/cancel"), 404, "order-not-found")
    listed = await as_mallory.get("/api/orders")
    assert order_id not in {order["id"] for order in listed.body["items"]}
    # On orders' own port too: the check is the service's, not the gateway's.
    direct = secured.direct("orders", mallory.token)
    secured.assert_problem(await direct.get(f"/orders/{order_id}"), 404, "order-not-found")
    still = await secured.gateway(alice.token).get(f"/api/orders/{order_id}")
    assert still.body["status"] == "CONFIRMED"


async def test_a_customer_cannot_read_anothers_payment(secured, alice, mallory):
    order_id = await alices_confirmed_order(secured, alice)
    own = await secured.gateway(alice.token).get(f"/api/payments/{order_id}")
    assert own.status == 200, own.body
    secured.assert_problem(await secured.gateway(mallory.token).get(f"/api/payments/{order_id}"), 404)
    secured.assert_problem(await secured.direct("payments", mallory.token).get(f"/payments/{order_id}"), 404)


async def test_a_customer_sees_only_their_own_notifications(secured, alice, mallory):
    order_id = await alices_confirmed_order(secured, alice)
    alices = secured.gateway(alice.token)

    async def alice_notified() -> bool:
        listed = await alices.get("/api/notifications", params={"order_id": order_id})
        return listed.body["total"] > 0

    await wait_until(alice_notified, timeout=20, what="alice's order confirmation notification")
    listed = await alices.get("/api/notifications", params={"order_id": order_id})
    notification_id = listed.body["items"][0]["id"]
    mallorys = secured.gateway(mallory.token)
    theirs = await mallorys.get("/api/notifications", params={"order_id": order_id})
    assert theirs.status == 200 and theirs.body["total"] == 0, f"another customer's mail is listed: {theirs.body}"
    secured.assert_problem(await mallorys.get(f"/api/notifications/{notification_id}"), 404)
