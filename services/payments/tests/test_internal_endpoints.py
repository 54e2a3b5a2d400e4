"""Tokenizing, charging and refunding are orders' calls: a service token only. An admin's token
is refused too (an admin refund by hand left an order CONFIRMED with its money gone)."""

import uuid

from microshop_chassis.testing import ApiClient

CARD = {"card_number": "4242424242424242", "expiry_month": 12, "expiry_year": 2099, "cvc": "123"}


async def test_an_admin_may_not_call_the_endpoints_meant_for_orders(payments, mint, as_service):
    admin = ApiClient(payments.url, mint.token(role="admin"))
    order_id = str(uuid.uuid4())
    charge = {"order_id": order_id, "customer_id": str(uuid.uuid4()), "amount_cents": 100, "currency": "USD",
              "card_token": "tok_x"}
    refused = [await admin.post("/payment-methods", json=CARD),
               await admin.post("/charges", json=charge, headers={"Idempotency-Key": f"pay-{order_id}"}),
               await admin.post(f"/payments/{order_id}/refund")]
    for reply in refused:
        assert reply.status == 403, reply.body
        assert reply.body["type"] == "https://microshop.dev/problems/forbidden"

    # The same calls with orders' service token get through to the use cases.
    assert (await as_service.post("/payment-methods", json=CARD)).status == 201
    refund = await as_service.post(f"/payments/{order_id}/refund")
    assert refund.status not in (401, 403), refund.body  # what a refund of no charge answers is payments' own
