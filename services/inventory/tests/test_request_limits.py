"""What the audit sent to inventory (issue 8 items 5 and 7): an offset of 2^63 on the public
product list was a 500 from the database; a client could send fields the API does not take."""

import pytest
from microshop_chassis.errors import PROBLEM_JSON


@pytest.mark.parametrize("path", ["/products", "/stock", "/reservations"])
async def test_an_offset_beyond_the_bound_is_422_not_500(inventory, path):
    reply = await inventory.admin.get(path, params={"offset": str(2**63)})
    assert reply.status == 422, reply.body
    assert reply.headers["Content-Type"].startswith(PROBLEM_JSON)
    assert [e["loc"] for e in reply.body["errors"]] == [["query", "offset"]]


async def test_the_public_product_list_takes_the_largest_offset_allowed(inventory):
    reply = await inventory.anonymous.get("/products", params={"offset": "10000000"})
    assert reply.status == 200 and reply.body["items"] == []


async def test_unknown_and_coerced_fields_are_refused(inventory):
    sku = "MUG-STRICT"
    created = await inventory.admin.put(f"/products/{sku}", json={"name": "Mug", "price_cents": 1200})
    assert created.status in (200, 201), created.body
    extra = await inventory.admin.put(f"/stock/{sku}", json={"on_hand": 5, "reserved": 0})
    assert extra.status == 422 and extra.body["errors"][0]["type"] == "extra_forbidden"
    coerced = await inventory.service.put("/reservations/order-strict-1",
                                          json={"items": [{"sku": sku, "quantity": "1"}]})
    assert coerced.status == 422 and coerced.body["errors"][0]["type"] == "int_type"
