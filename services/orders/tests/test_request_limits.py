"""What the audit sent to orders (issue 8 item 5): a 10 MB junk field in an order was accepted.
Now the body limit refuses it before parsing, and the strict model refuses it even under a raised
limit; a quantity must be a JSON integer."""

import uuid

from microshop_chassis.testing import ApiClient, RunningApp
from microshop_orders.bootstrap import build

APPROVED = {"card_number": "4242424242424242", "expiry_month": 12, "expiry_year": 2030, "cvc": "123"}
JUNK = "j" * 10 * 1024 * 1024


def order_body(**extra) -> dict:
    return {"items": [{"sku": "mug", "quantity": 2}], "payment": APPROVED, **extra}


async def place(orders, mint, body: dict):
    api = ApiClient(orders.url, mint.token("c1", email="c1@example.com"))
    return await api.post("/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})


async def test_a_10_mb_junk_field_is_413_before_parsing(orders, mint, world):
    reply = await place(orders, mint, order_body(note=JUNK))
    assert reply.status == 413
    assert reply.body["type"] == "https://microshop.dev/problems/payload-too-large"
    assert world.charge_calls == 0


async def test_under_a_raised_body_limit_the_junk_field_is_still_refused(settings, mint, world):
    raised = settings.model_copy(update={"max_body_bytes": 64 * 1024 * 1024})
    async with RunningApp(build(raised, verifier=mint.verifier()).app) as orders:
        for body in (order_body(note=JUNK), {**order_body(), "items": [{"sku": "mug" * 4_000_000, "quantity": 1}]}):
            reply = await place(orders, mint, body)
            assert reply.status == 422, reply.body
            assert reply.body["type"] == "https://microshop.dev/problems/validation-error"
    assert world.charge_calls == 0


async def test_a_quantity_must_be_a_json_integer(orders, mint, world):
    for quantity in (True, "2", 2.0):
        reply = await place(orders, mint, {**order_body(), "items": [{"sku": "mug", "quantity": quantity}]})
        assert reply.status == 422, (quantity, reply.body)
        assert [e["loc"] for e in reply.body["errors"]] == [["body", "items", 0, "quantity"]]
    assert world.charge_calls == 0
