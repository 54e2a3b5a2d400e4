"""orders over real HTTP, real databases and a real NATS, with inventory and payments stood in by
the fake world of conftest.py. The real services are exercised together in tests/e2e."""

import uuid

from microshop_chassis.testing import ApiClient, assert_event_matches_contract, stream_events, wait_until

from .conftest import start_orders

APPROVED = {"card_number": "4242424242424242", "expiry_month": 12, "expiry_year": 2030, "cvc": "123"}
DECLINED = {**APPROVED, "card_number": "4000000000000002"}


def order_body(items=(("mug", 2),), card=APPROVED) -> dict:
    return {"items": [{"sku": s, "quantity": q} for s, q in items], "payment": card}


async def place(api: ApiClient, body: dict, key: str | None = None):
    return await api.post("/orders", json=body, headers={"Idempotency-Key": key or str(uuid.uuid4())})


def customer_api(orders, mint, customer_id="c1") -> ApiClient:
    return ApiClient(orders.url, mint.token(customer_id, email=f"{customer_id}@example.com"))


async def test_approved_checkout_confirms_and_publishes(orders, mint, world, settings):
    reply = await place(customer_api(orders, mint), order_body([("mug", 2), ("tee", 1)]))
    assert reply.status == 201, reply.body
    order = reply.body
    assert order["status"] == "CONFIRMED" and order["reason"] is None
    assert order["total_cents"] == 2 * 1200 + 2500 and order["currency"] == "USD"
    assert {(i["sku"], i["quantity"], i["unit_price_cents"]) for i in order["items"]} == {("mug", 2, 1200),
                                                                                       ("tee", 1, 2500)}
    assert world.reservations[order["id"]]["status"] == "COMMITTED"
    assert world.payments[order["id"]]["status"] == "CAPTURED" and order["payment_id"]
    assert "4242424242424242" not in str(order)
    events = await stream_events(settings.nats_url, "events.orders.>", expect=2,
                                 match=lambda e: e["data"]["order_id"] == order["id"])
    assert [e["type"] for e in events] == ["OrderPlaced", "OrderConfirmed"]
    for event in events:
        assert_event_matches_contract(event)
    assert events[1]["data"]["payment_id"] == order["payment_id"]
    assert events[1]["data"]["customer_email"] == "c1@example.com"


async def test_out_of_stock_is_rejected_and_charges_nothing(orders, mint, world):
    reply = await place(customer_api(orders, mint), order_body([("tee", 6)]))
    assert reply.status == 201
    assert reply.body["status"] == "REJECTED" and "tee" in reply.body["reason"]
    assert world.charge_calls == 0 and world.stock["tee"] == 5


async def test_declined_card_releases_the_stock(orders, mint, world):
    reply = await place(customer_api(orders, mint), order_body([("mug", 3)], card=DECLINED))
    assert reply.status == 201
    assert reply.body["status"] == "REJECTED" and "declined" in reply.body["reason"]
    assert world.reservations[reply.body["id"]]["status"] == "RELEASED"
    assert world.stock["mug"] == 10


async def test_same_key_same_body_returns_the_same_order_and_charges_once(orders, mint, world):
    api = customer_api(orders, mint)
    first = await place(api, order_body(), key="key-1")
    again = await place(api, order_body(), key="key-1")
    assert again.status == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.body["id"] == first.body["id"]
    assert world.charge_calls == 1 and len(world.payments) == 1
    other = await place(api, order_body([("tee", 1)]), key="key-1")
    assert other.status == 422 and other.body["type"].endswith("/idempotency-key-reused")
    # Keys are per customer: another customer's identical key is a different order.
    theirs = await place(customer_api(orders, mint, "c2"), order_body(), key="key-1")
    assert theirs.status == 201 and theirs.body["id"] != first.body["id"]


async def test_missing_key_and_bad_input_are_problems(orders, mint):
    api = customer_api(orders, mint)
    missing = await api.post("/orders", json=order_body())
    assert missing.status == 400 and missing.headers["Content-Type"].startswith("application/problem+json")
    duplicate_sku = await place(api, order_body([("mug", 1), ("mug", 2)]))
    assert duplicate_sku.status == 422
    unknown = await place(api, order_body([("nope", 1)]))
    assert unknown.status == 422 and unknown.body["skus"] == ["nope"]
    bad_card = await place(api, order_body(card={**APPROVED, "card_number": "4242-4242-4242-4242"}))
    assert bad_card.status == 422 and bad_card.body["type"].endswith("/invalid-card")
    assert (await api.get("/orders")).body["total"] == 0  # nothing was created by any of them


async def test_payments_down_leaves_order_pending_then_recovers(orders, mint, world):
    world.payments_down = True
    api = customer_api(orders, mint)
    reply = await place(api, order_body())
    assert reply.status == 202 and reply.body["status"] == "PENDING"
    order_id = reply.body["id"]
    world.payments_down = False

    async def confirmed():
        current = await api.get(f"/orders/{order_id}")
        return current.body["status"] == "CONFIRMED"

    await wait_until(confirmed, timeout=15, what="recovery to confirm the order")
    assert len(world.payments) == 1


async def test_past_its_deadline_a_stuck_charge_is_voided_and_the_stock_released(settings, orders_factory, mint, world):
    settings.saga_deadline_seconds = 0.5
    world.payments_down = True
    async with orders_factory() as orders:
        api = customer_api(orders, mint)
        reply = await place(api, order_body([("mug", 3)]))
        assert reply.status == 202 and reply.body["status"] == "PENDING"
        order_id = reply.body["id"]
        assert world.stock["mug"] == 7  # held while the charge cannot be made
        # Past the deadline, the retried saga compensates instead of charging: payments comes back
        # and is asked to void, never to charge.
        world.payments_down = False

        async def rejected():
            return (await api.get(f"/orders/{order_id}")).body["status"] == "REJECTED"

        await wait_until(rejected, timeout=15, what="the deadline to reject the order")
        final = (await api.get(f"/orders/{order_id}")).body
    assert final["reason"] == "checkout did not complete in time"
    assert world.charge_calls == 0
    assert world.payments[order_id]["status"] == "VOIDED"
    assert world.reservations[order_id]["status"] == "RELEASED" and world.stock["mug"] == 10


async def test_past_its_deadline_a_stuck_reservation_is_released(settings, orders_factory, mint, world):
    settings.saga_deadline_seconds = 0.5
    async with orders_factory() as orders:
        api = customer_api(orders, mint)
        # Inventory answers the price lookup, then fails every reservation (as if it timed out).
        world.reserve_down = True
        reply = await place(api, order_body([("tee", 2)]))
        assert reply.status == 202 and reply.body["status"] == "PENDING"
        order_id = reply.body["id"]
        world.reserve_down = False

        async def rejected():
            return (await api.get(f"/orders/{order_id}")).body["status"] == "REJECTED"

        await wait_until(rejected, timeout=15, what="the deadline to reject the order")
    # Released before it was ever held: the tombstone refuses the late reservation.
    assert world.reservations[order_id]["status"] == "RELEASED"
    assert world.stock["tee"] == 5 and world.charge_calls == 0


async def test_saga_resumes_after_the_process_is_replaced(orders_factory, mint, world):
    world.payments_down = True
    async with orders_factory() as first:
        reply = await place(customer_api(first, mint), order_body())
        assert reply.body["status"] == "PENDING"
    world.payments_down = False
    async with orders_factory() as second:  # same database: picks the saga up
        api = customer_api(second, mint)

        async def confirmed():
            return (await api.get(f"/orders/{reply.body['id']}")).body["status"] == "CONFIRMED"

        await wait_until(confirmed, timeout=15, what="the new process to finish the saga")
    assert world.reservations[reply.body["id"]]["status"] == "COMMITTED"


async def test_cancel_refunds_and_restocks_once(orders, mint, world):
    api = customer_api(orders, mint)
    order = (await place(api, order_body([("mug", 4)]))).body
    assert world.stock["mug"] == 6
    cancelled = await api.post(f"/orders/{order['id']}/cancel")
    assert cancelled.status == 200 and cancelled.body["status"] == "CANCELLED"
    assert world.payments[order["id"]]["status"] == "REFUNDED" and world.stock["mug"] == 10
    again = await api.post(f"/orders/{order['id']}/cancel")
    assert again.status == 409 and again.body["order_status"] == "CANCELLED"
    assert world.refund_calls == 1


async def test_only_the_owner_or_an_admin_sees_an_order(orders, mint):
    order = (await place(customer_api(orders, mint, "alice"), order_body())).body
    assert (await customer_api(orders, mint, "bob").get(f"/orders/{order['id']}")).status == 404
    assert (await customer_api(orders, mint, "bob").get("/orders")).body["total"] == 0
    admin = ApiClient(orders.url, mint.token("root", role="admin"))
    assert (await admin.get(f"/orders/{order['id']}")).body["id"] == order["id"]
    assert (await admin.get("/orders")).body["total"] == 1
    saga = await admin.get(f"/orders/{order['id']}/saga")
    assert saga.body["step"] == "done" and saga.body["attempts"] == 0
    assert (await customer_api(orders, mint, "alice").get(f"/orders/{order['id']}/saga")).status == 403


async def test_checkouts_reuse_a_price_quote_until_it_is_too_old(settings, mint, world):
    settings.price_quote_seconds = 3600
    async with start_orders(settings, mint) as orders:
        api = customer_api(orders, mint)
        first = await place(api, order_body([("mug", 1)]))
        world.prices["mug"] = 1500  # changed in the catalog within the quote's life
        second = await place(api, order_body([("mug", 1), ("tee", 1)]))
        assert [first.body["total_cents"], second.body["total_cents"]] == [1200, 1200 + 2500]
        assert world.price_lookups == 2  # the mug once, the tee once
        unknown = await place(api, order_body([("lamp", 1)]))
        assert unknown.status == 422 and unknown.body["type"].endswith("/unknown-sku")  # asked, not cached
        assert world.price_lookups == 3
