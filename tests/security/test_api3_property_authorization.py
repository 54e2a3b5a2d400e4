"""API3:2023 Broken object property level authorization: a client sets only the fields a request
model declares. Unknown fields are refused (422), never silently dropped, so a role, a price or a
status in a body can neither be set nor be mistaken for having been set; JSON types are strict."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_registration_cannot_choose_a_role(secured):
    email = f"climber-{uuid.uuid4().hex[:8]}@example.com"
    reply = await secured.gateway().post("/api/users/register", json={
        "email": email, "password": "sturdy-climber-pass-41", "name": "Climber", "role": "admin"})
    secured.assert_problem(reply, 422, "validation-error")
    login = await secured.gateway().post("/api/users/login",
                                         json={"email": email, "password": "sturdy-climber-pass-41"})
    assert login.status == 401, "the refused registration created an account"


@pytest.mark.parametrize("extra", [
    {"status": "CONFIRMED"},
    {"total_cents": 1},
    {"customer_id": "someone-else"},
])
async def test_an_order_cannot_carry_its_own_status_total_or_owner(secured, extra):
    reply = await secured.order(secured.customers["bob"].token, **extra)
    secured.assert_problem(reply, 422, "validation-error")


async def test_an_order_line_cannot_carry_its_own_price(secured):
    body = {"items": [{"sku": secured.sku, "quantity": 1, "unit_price_cents": 1}], "payment": secured.approved_card}
    reply = await secured.gateway(secured.customers["bob"].token).post(
        "/api/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
    secured.assert_problem(reply, 422, "validation-error")


@pytest.mark.parametrize("quantity", [True, "2", 1.5])
async def test_quantities_are_strict_json_integers(secured, quantity):
    body = {"items": [{"sku": secured.sku, "quantity": quantity}], "payment": secured.approved_card}
    reply = await secured.gateway(secured.customers["bob"].token).post(
        "/api/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
    secured.assert_problem(reply, 422, "validation-error")


async def test_a_product_update_refuses_fields_it_does_not_declare(secured):
    admin = secured.gateway(secured.admin.token)
    product = (await admin.get(f"/api/inventory/products/{secured.sku}")).body
    update = {key: product[key] for key in ("name", "description", "price_cents", "currency")}
    reply = await admin.put(f"/api/inventory/products/{secured.sku}", json={**update, "available": 10**6})
    secured.assert_problem(reply, 422, "validation-error")
