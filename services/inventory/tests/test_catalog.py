"""Catalog and stock over real HTTP, on SQLite and PostgreSQL."""

from microshop_chassis.contracts import MAX_CHARGE_CENTS
from microshop_chassis.testing import TokenMint

PROBLEM_JSON = "application/problem+json"


def problem_type(reply) -> str:
    assert reply.headers["Content-Type"].startswith(PROBLEM_JSON), reply.headers
    return reply.body["type"].rsplit("/", 1)[-1]


async def test_admin_creates_and_updates_products_and_anyone_reads_them(inventory):
    created = await inventory.admin.put("/products/MUG-BLUE", json={
        "name": "Blue mug", "description": "Holds 300 ml.", "price_cents": 1250,
    })
    assert created.status == 201
    assert created.body == {"sku": "MUG-BLUE", "name": "Blue mug", "description": "Holds 300 ml.",
                            "price_cents": 1250, "currency": "USD", "available": 0}

    assert (await inventory.admin.put("/stock/MUG-BLUE", json={"on_hand": 7})).status == 200
    updated = await inventory.admin.put("/products/MUG-BLUE", json={"name": "Mug, blue", "price_cents": 1400,
                                                                    "currency": "USD"})
    assert updated.status == 200
    # An update changes the catalog data and leaves the stock alone.
    assert updated.body == {"sku": "MUG-BLUE", "name": "Mug, blue", "description": "", "price_cents": 1400,
                            "currency": "USD", "available": 7}

    read = await inventory.anonymous.get("/products/MUG-BLUE")
    assert read.status == 200 and read.body == updated.body
    assert await inventory.stock("MUG-BLUE") == {"sku": "MUG-BLUE", "on_hand": 7, "reserved": 0}


async def test_product_list_is_ordered_paged_and_filtered_by_sku(inventory):
    for sku in ("C-3", "A-1", "B-2", "D-4"):
        await inventory.add_product(sku, on_hand=2)

    everything = await inventory.anonymous.get("/products")
    assert everything.status == 200 and everything.body["total"] == 4
    assert [p["sku"] for p in everything.body["items"]] == ["A-1", "B-2", "C-3", "D-4"]

    page = await inventory.anonymous.get("/products", params={"limit": 2, "offset": 1})
    assert page.body["total"] == 4 and [p["sku"] for p in page.body["items"]] == ["B-2", "C-3"]

    chosen = await inventory.anonymous.get("/products", params=[("sku", "D-4"), ("sku", "A-1"), ("sku", "NOPE")])
    assert chosen.body["total"] == 2
    assert [(p["sku"], p["available"]) for p in chosen.body["items"]] == [("A-1", 2), ("D-4", 2)]


async def test_a_list_by_sku_tells_the_true_total_on_every_page(inventory):
    # The total of a page that ends early comes from its rows, of a full one from a count: both agree.
    for sku in ("A-1", "B-2", "C-3", "D-4", "E-5"):
        await inventory.add_product(sku, on_hand=1)
    wanted = [("sku", sku) for sku in ("E-5", "NOPE", "A-1", "C-3", "C-3")]
    matching = ["A-1", "C-3", "E-5"]
    for limit in range(1, 5):
        for offset in range(0, 5):
            page = await inventory.anonymous.get("/products", params=[*wanted, ("limit", limit), ("offset", offset)])
            assert page.status == 200
            assert page.body["total"] == len(matching), (limit, offset)
            assert [p["sku"] for p in page.body["items"]] == matching[offset:offset + limit], (limit, offset)


async def test_unknown_product_is_a_404_problem(inventory):
    reply = await inventory.anonymous.get("/products/NOPE")
    assert reply.status == 404 and problem_type(reply) == "product-not-found"
    stock = await inventory.admin.put("/stock/NOPE", json={"on_hand": 3})
    assert stock.status == 404 and problem_type(stock) == "product-not-found"


async def test_admin_routes_refuse_customers_services_and_anonymous_callers(inventory):
    await inventory.add_product("MUG", on_hand=1)
    admin_calls = [
        ("PUT", "/products/MUG", {"name": "Hacked", "price_cents": 0}),
        ("GET", "/stock", None),
        ("GET", "/stock/summary", None),
        ("PUT", "/stock/MUG", {"on_hand": 999}),
        ("GET", "/reservations", None),
    ]
    for method, path, body in admin_calls:
        for caller in (inventory.customer, inventory.service):
            reply = await caller.request(method, path, json=body)
            assert reply.status == 403 and problem_type(reply) == "forbidden", (method, path)
        anonymous = await inventory.anonymous.request(method, path, json=body)
        assert anonymous.status == 401 and problem_type(anonymous) == "unauthorized", (method, path)

    # Reservations are for other services only: not for customers, not for admins either (a
    # restock by hand would leave the order it belongs to behind).
    for method, path in [("PUT", "/reservations/o-1"), ("GET", "/reservations/o-1"),
                         ("POST", "/reservations/o-1/commit"), ("POST", "/reservations/o-1/release"),
                         ("POST", "/reservations/o-1/restock")]:
        for caller in (inventory.customer, inventory.admin):
            reply = await caller.request(method, path, json={"items": [{"sku": "MUG", "quantity": 1}]})
            assert reply.status == 403 and problem_type(reply) == "forbidden", (method, path)
    assert (await inventory.service.get("/reservations/o-1")).status == 404  # a service may look

    # Nothing the refused calls tried took effect.
    assert (await inventory.anonymous.get("/products/MUG")).body["name"] == "Product MUG"
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 1, "reserved": 0}


async def test_a_forged_token_is_refused(inventory):
    forged = TokenMint().token(role="admin")  # right shape, wrong key
    reply = await inventory.anonymous.get("/stock", token=forged)
    assert reply.status == 401 and problem_type(reply) == "unauthorized"


async def test_stock_is_set_by_admin_and_never_below_what_is_reserved(inventory):
    await inventory.add_product("LAMP", on_hand=5)
    assert (await inventory.reserve("order-1", {"LAMP": 3})).status == 201

    below = await inventory.admin.put("/stock/LAMP", json={"on_hand": 2})
    assert below.status == 409 and problem_type(below) == "stock-below-reserved"
    assert below.body["reserved"] == 3
    assert await inventory.stock("LAMP") == {"sku": "LAMP", "on_hand": 5, "reserved": 3}

    exact = await inventory.admin.put("/stock/LAMP", json={"on_hand": 3})
    assert exact.status == 200 and exact.body == {"sku": "LAMP", "on_hand": 3, "reserved": 3, "available": 0,
                                                  "received_units": 3, "sold_units": 0}
    assert (await inventory.anonymous.get("/products/LAMP")).body["available"] == 0


async def test_stock_list_is_paged(inventory):
    for sku in ("B", "A", "C"):
        await inventory.add_product(sku, on_hand=ord(sku))
    reply = await inventory.admin.get("/stock", params={"limit": 2})
    assert reply.status == 200 and reply.body["total"] == 3
    assert reply.body["items"] == [
        {"sku": "A", "on_hand": 65, "reserved": 0, "available": 65, "received_units": 65, "sold_units": 0},
        {"sku": "B", "on_hand": 66, "reserved": 0, "available": 66, "received_units": 66, "sold_units": 0},
    ]


async def test_bad_input_is_a_422_problem_naming_the_field(inventory):
    await inventory.add_product("MUG", on_hand=5)
    cases = [
        ("PUT", "/products/MUG", {"name": "Mug", "price_cents": -1}, "price_cents"),
        ("PUT", "/products/MUG", {"name": "Mug", "price_cents": 12.5}, "price_cents"),
        ("PUT", "/products/MUG", {"name": "Mug", "price_cents": "1250"}, "price_cents"),
        ("PUT", "/products/MUG", {"name": "Mug", "price_cents": 100, "currency": "usd"}, "currency"),
        # Only what payments can charge: a free product, one above the charge cap or priced in a
        # currency payments does not take would leave its orders unpayable.
        ("PUT", "/products/MUG", {"name": "Mug", "price_cents": 0}, "price_cents"),
        ("PUT", "/products/MUG", {"name": "Mug", "price_cents": MAX_CHARGE_CENTS + 1}, "price_cents"),
        ("PUT", "/products/MUG", {"name": "Mug", "price_cents": 100, "currency": "EUR"}, "currency"),
        ("PUT", "/products/MUG", {"name": "Mug", "price_cents": 100, "currency": "XXXX"}, "currency"),
        ("PUT", "/products/MUG", {"name": "", "price_cents": 100}, "name"),
        ("PUT", "/products/has%20space", {"name": "Mug", "price_cents": 100}, "sku"),
        ("PUT", "/stock/MUG", {"on_hand": -3}, "on_hand"),
        ("PUT", "/stock/MUG", {}, "on_hand"),
        ("GET", "/products?limit=0", None, "limit"),
        ("GET", "/products?limit=1001", None, "limit"),
        ("GET", "/stock?offset=-1", None, "offset"),
        ("GET", "/reservations?status=LOST", None, "status"),
    ]
    for method, path, body, field in cases:
        reply = await inventory.admin.request(method, path, json=body)
        assert reply.status == 422, (method, path, body, reply.body)
        assert problem_type(reply) == "validation-error"
        assert field in {str(part) for error in reply.body["errors"] for part in error["loc"]}, reply.body
    # None of the refused writes changed anything.
    assert (await inventory.anonymous.get("/products/MUG")).body["price_cents"] == 1250
    assert await inventory.stock("MUG") == {"sku": "MUG", "on_hand": 5, "reserved": 0}


async def test_ready_checks_the_database_and_openapi_documents_the_api(inventory):
    ready = await inventory.anonymous.get("/ready")
    assert ready.status == 200 and ready.body["checks"] == {"database": "ok"}

    spec = (await inventory.anonymous.get("/openapi.json")).body
    reserve = spec["paths"]["/reservations/{order_id}"]["put"]
    assert {"200", "201", "409", "422"} <= set(reserve["responses"])
    assert reserve["summary"] and reserve["responses"]["201"]["content"]["application/json"]["schema"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), (method, path)
