"""Issue 8 items 6 and 9, orders' end: what no retry can change is decided at once (refused before
the order exists, compensated, or stopped in NEEDS_ATTENTION), and card testing meets a 429.
Over real HTTP, with inventory and payments stood in by conftest.py's fake world."""

import aiohttp
from microshop_chassis.contracts import MAX_CHARGE_CENTS
from microshop_chassis.testing import ApiClient

from .test_checkout import APPROVED, DECLINED, customer_api, order_body, place


async def metric(orders, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{orders.url}/metrics") as reply:
        text = await reply.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


async def test_a_charge_refused_for_good_is_compensated_at_once_not_retried(orders, mint, world):
    # Before: the 422 was an UnexpectedReply like a 503, retried with backoff until the 60 s deadline.
    world.charge_refusal = (422, "Validation error")
    reply = await place(customer_api(orders, mint), order_body([("mug", 3)]))
    assert reply.status == 201, reply.body  # the outcome within the request, not a 202 PENDING
    assert reply.body["status"] == "REJECTED"
    assert reply.body["reason"] == "payments refused the charge: Validation error"
    assert world.charge_calls == 1  # never repeated
    assert world.reservations[reply.body["id"]]["status"] == "RELEASED" and world.stock["mug"] == 10
    assert await metric(orders, "saga_steps_given_up_total") == 1


async def test_an_order_payments_could_not_charge_is_refused_before_it_exists(orders, mint, world):
    api = customer_api(orders, mint)
    world.prices["mug"] = MAX_CHARGE_CENTS  # a price inventory accepts, but two of them exceed the cap
    too_large = await place(api, order_body([("mug", 2)]))
    assert too_large.status == 422 and too_large.body["type"].endswith("/unchargeable-order"), too_large.body
    world.prices["mug"] = 0  # a product priced before inventory refused free ones
    free = await place(api, order_body([("mug", 1)]))
    assert free.status == 422 and free.body["type"].endswith("/unchargeable-order")
    assert (await api.get("/orders")).body["total"] == 0
    assert world.reservations == {} and world.charge_calls == 0


async def test_a_release_finding_the_units_sold_stops_in_needs_attention(orders, mint, world):
    world.release_finds = "COMMITTED"  # the compensation cannot take a sale back
    reply = await place(customer_api(orders, mint), order_body([("mug", 1)], card=DECLINED))
    assert reply.status == 202, reply.body  # no outcome the customer can rely on yet
    order = reply.body
    assert order["status"] == "NEEDS_ATTENTION" and "staff" in order["reason"]
    admin = ApiClient(orders.url, mint.token("root", role="admin"))
    saga = (await admin.get(f"/orders/{order['id']}/saga")).body
    assert saga["step"] == "done"  # no retry loop picks it up again
    assert "release_stock" in saga["last_error"] and "COMMITTED" in saga["last_error"]
    assert await metric(orders, "orders_needs_attention_total") == 1
    listed = await admin.get("/orders", params={"status": "NEEDS_ATTENTION"})
    assert [o["id"] for o in listed.body["items"]] == [order["id"]]


async def test_a_release_finding_the_units_restocked_is_done(orders, mint, world):
    world.release_finds = "RESTOCKED"  # what the release wanted: nothing held or sold for the order
    reply = await place(customer_api(orders, mint), order_body([("mug", 1)], card=DECLINED))
    assert reply.status == 201 and reply.body["status"] == "REJECTED"


async def test_the_customer_sees_a_generic_decline(orders, mint, world):
    reply = await place(customer_api(orders, mint), order_body([("mug", 1)], card=DECLINED))
    assert reply.body["status"] == "REJECTED"
    assert reply.body["reason"] == "The payment was declined."
    assert "card_declined" not in str(reply.body)  # the processor's code stays with payments (admins)


async def test_card_testing_is_refused_with_429_and_retry_after_and_creates_no_order(orders, mint, world):
    world.velocity_limited = {"tester"}
    tester = customer_api(orders, mint, "tester")
    reply = await place(tester, order_body(card=APPROVED))
    assert reply.status == 429, reply.body
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert reply.body["type"].endswith("/too-many-payment-attempts")
    assert reply.headers["Retry-After"] == "120" and reply.body["retry_after_seconds"] == 120
    assert (await tester.get("/orders")).body["total"] == 0 and world.charge_calls == 0
    # Another customer is not affected.
    other = await place(customer_api(orders, mint, "someone-else"), order_body())
    assert other.status == 201 and other.body["status"] == "CONFIRMED"
