"""reports over real HTTP with a real nats-server of its own per test: events are published straight
to JetStream, the way the orders and payments outboxes publish them."""

import json
import uuid
from collections import defaultdict

import duckdb

from microshop_chassis.events import STREAM, Event
from microshop_chassis.testing import ApiClient, assert_event_matches_contract, wait_until
from microshop_reports.domain import SCHEMA_VERSION

# --- events, as the orders and payments services publish them ---------------------------------


def new_order(*lines: tuple[str, int, int], customer_id: str = "customer-1") -> dict:
    """OrderPlaced-style data for lines of (sku, quantity, unit_price_cents)."""
    items = [{"sku": sku, "quantity": qty, "unit_price_cents": price} for sku, qty, price in lines]
    return {
        "order_id": str(uuid.uuid4()),
        "customer_id": customer_id,
        "customer_email": f"{customer_id}@example.com",
        "items": items,
        "total_cents": sum(qty * price for _, qty, price in lines),
        "currency": "USD",
    }


def order_event(event_type: str, order: dict, **extra) -> Event:
    return Event(type=event_type, source="orders", data={**order, **extra})


def payment_event(event_type: str, order: dict) -> Event:
    return Event(type=event_type, source="payments", data={
        "payment_id": f"pay-{order['order_id']}", "order_id": order["order_id"],
        "customer_id": order["customer_id"], "amount_cents": order["total_cents"], "currency": "USD",
    })


def placed(order):
    return order_event("OrderPlaced", order)


def confirmed(order):
    return order_event("OrderConfirmed", order, payment_id=f"pay-{order['order_id']}")


def rejected(order):
    return order_event("OrderRejected", order, reason="out_of_stock")


def cancelled(order):
    return order_event("OrderCancelled", order)


def captured(order):
    return payment_event("PaymentCaptured", order)


def refunded(order):
    return payment_event("PaymentRefunded", order)


def checkout(order) -> list[Event]:
    """The events of a successful checkout, in the order the saga emits them."""
    return [placed(order), captured(order), confirmed(order)]


async def publish(js, *events: Event, msg_id: str | None = None) -> None:
    for event in events:
        assert_event_matches_contract(json.loads(event.model_dump_json()))
        await js.publish(event.subject, event.model_dump_json().encode(),
                         headers={"Nats-Msg-Id": msg_id or event.id})


# --- reading the service ----------------------------------------------------------------------


async def status_when(api: ApiClient, check, what: str) -> dict:
    async def probe():
        reply = await api.get("/status")
        return reply.body if reply.status == 200 and check(reply.body) else None

    return await wait_until(probe, timeout=15, what=what)


async def applied(api: ApiClient, count: int) -> dict:
    return await status_when(api, lambda s: s["events_applied"] >= count, f"{count} events applied")


async def sales(api: ApiClient) -> dict:
    reply = await api.get("/sales")
    assert reply.status == 200, reply.body
    return reply.body


def expected_sales(confirmed_orders: list[dict]) -> dict:
    """The figures, computed independently from the orders a test confirmed."""
    units: dict[str, int] = defaultdict(int)
    revenue: dict[str, int] = defaultdict(int)
    for order in confirmed_orders:
        for item in order["items"]:
            units[item["sku"]] += item["quantity"]
            revenue[item["sku"]] += item["quantity"] * item["unit_price_cents"]
    return {
        "orders_confirmed": len(confirmed_orders),
        "revenue_cents": sum(order["total_cents"] for order in confirmed_orders),
        "units_sold": sum(units.values()),
        "by_product": [{"sku": sku, "units": units[sku], "revenue_cents": revenue[sku]}
                       for sku in sorted(units, key=lambda sku: (-revenue[sku], sku))],
    }


def headline(report: dict) -> dict:
    return {key: report[key] for key in ("orders_confirmed", "revenue_cents", "units_sold", "by_product")}


def add_ghost_order(settings, schema_version: int | None = None) -> None:
    """Write a confirmed order no event explains into the stopped service's file."""
    with duckdb.connect(str(settings.resolved_duckdb_path())) as conn:
        conn.execute("INSERT INTO orders (order_id, customer_id, status, total_cents, currency) "
                     "VALUES ('ghost', 'nobody', 'CONFIRMED', 999999, 'USD')")
        if schema_version is not None:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(schema_version)])


# A small shop day: two checkouts that share a SKU, one pending order, one rejected.
def shop_day() -> tuple[list[Event], list[dict]]:
    first = new_order(("mug", 2, 1500), ("tee", 1, 2500))
    second = new_order(("cap", 1, 2500), ("mug", 1, 1500), customer_id="customer-2")
    pending = new_order(("tee", 5, 2500))
    refused = new_order(("cap", 9, 2500))
    events = [*checkout(first), *checkout(second), placed(pending), placed(refused), rejected(refused)]
    return events, [first, second]


# --- tests ------------------------------------------------------------------------------------


async def test_sales_count_confirmed_orders(api, js):
    events, confirmed_orders = shop_day()
    await publish(js, *events)
    await applied(api, len(events))

    report = await sales(api)
    assert headline(report) == expected_sales(confirmed_orders)
    # Ties on revenue fall back to the SKU: cap and tee both sold 2500.
    assert [p["sku"] for p in report["by_product"]] == ["mug", "cap", "tee"]
    assert report["orders_placed"] == 1 and report["orders_rejected"] == 1 and report["orders_cancelled"] == 0
    assert report["payments_captured_cents"] == sum(o["total_cents"] for o in confirmed_orders)
    assert report["payments_refunded_cents"] == 0 and report["currency"] == "USD"


async def test_a_cancellation_removes_the_order_from_the_figures(api, js):
    kept, dropped = new_order(("mug", 1, 1500)), new_order(("lamp", 2, 4000))
    await publish(js, *checkout(kept), *checkout(dropped))
    await applied(api, 6)
    assert headline(await sales(api)) == expected_sales([kept, dropped])

    await publish(js, cancelled(dropped), refunded(dropped))
    await applied(api, 8)
    report = await sales(api)
    assert headline(report) == expected_sales([kept])
    assert "lamp" not in {p["sku"] for p in report["by_product"]}
    assert report["orders_cancelled"] == 1
    assert report["payments_refunded_cents"] == dropped["total_cents"]
    assert report["payments_captured_cents"] == kept["total_cents"] + dropped["total_cents"]


async def test_a_redelivered_event_changes_nothing(api, js):
    order = new_order(("mug", 3, 1500))
    confirmation = confirmed(order)
    await publish(js, placed(order), confirmation)
    await applied(api, 2)
    before = await sales(api)

    # The same event id under another Nats-Msg-Id passes JetStream's dedupe: only reports can drop it.
    await publish(js, confirmation, msg_id=str(uuid.uuid4()))
    later = placed(new_order(("tee", 1, 2500)))
    await publish(js, later)
    # The consumer handles events in stream order, so once the later one is in, the copy was handled.
    status = await applied(api, 3)
    assert (await js.stream_info(STREAM)).state.messages == 4
    assert status["events_applied"] == 3
    assert await sales(api) == {**before, "orders_placed": before["orders_placed"] + 1}


async def test_events_arriving_out_of_order_still_land(api, js):
    order = new_order(("mug", 1, 1500))
    # The confirmation overtakes the placement, and the refund overtakes the capture.
    await publish(js, confirmed(order), placed(order), refunded(order), captured(order))
    await applied(api, 4)
    report = await sales(api)
    assert headline(report) == expected_sales([order])
    assert report["orders_placed"] == 0
    assert report["payments_refunded_cents"] == order["total_cents"]


async def test_rebuild_replays_the_stream_and_repairs_the_model(serve, admin, js, settings):
    events, confirmed_orders = shop_day()
    async with serve() as running:
        api = ApiClient(running.url, token=admin)
        await publish(js, *events)
        await publish(js, events[0], msg_id=str(uuid.uuid4()))  # a duplicate in the stream itself
        await applied(api, len(events))
        before = await sales(api)
    add_ghost_order(settings)  # damage the model behind the service's back

    async with serve() as running:
        api = ApiClient(running.url, token=admin)
        assert (await sales(api))["orders_confirmed"] == before["orders_confirmed"] + 1
        rebuilt = await api.post("/rebuild")
        assert rebuilt.status == 200, rebuilt.body
        assert rebuilt.body["events_replayed"] == len(events) + 1
        assert rebuilt.body["events_applied"] == len(events)
        assert rebuilt.body["duration_ms"] >= 0
        assert await sales(api) == before
        status = (await api.get("/status")).body
        assert status["events_applied"] == len(events) and status["replaying"] is False

        # The durable consumer resumed: new events still arrive.
        extra = new_order(("lamp", 1, 4000))
        await publish(js, *checkout(extra))
        await applied(api, len(events) + 3)
        assert headline(await sales(api)) == expected_sales([*confirmed_orders, extra])


async def test_a_malformed_event_blocks_nothing_and_a_rebuild_skips_it(api, js):
    broken = Event(type="OrderPlaced", source="orders", data={"order_id": "no-items"})  # breaks its contract
    await js.publish(broken.subject, broken.model_dump_json().encode(), headers={"Nats-Msg-Id": broken.id})
    order = new_order(("mug", 1, 1500))
    await publish(js, *checkout(order))
    await applied(api, 3)
    assert headline(await sales(api)) == expected_sales([order])

    rebuilt = (await api.post("/rebuild")).body
    assert rebuilt["events_replayed"] == 4 and rebuilt["events_applied"] == 3
    assert headline(await sales(api)) == expected_sales([order])


async def test_a_rebuild_racing_live_events_counts_each_once(api, js):
    first, second = new_order(("mug", 1, 1500)), new_order(("tee", 2, 2500))
    await publish(js, *checkout(first))
    await applied(api, 3)
    # Published and not waited for: the consumer may or may not have applied them when it pauses.
    await publish(js, *checkout(second))
    assert (await api.post("/rebuild")).status == 200

    await publish(js, placed(new_order(("cap", 1, 2500))))
    status = await applied(api, 7)
    assert status["events_applied"] == 7
    assert headline(await sales(api)) == expected_sales([first, second])


async def test_figures_survive_a_restart_even_without_the_broker(serve, admin, js, nats_of_own):
    events, confirmed_orders = shop_day()
    async with serve() as running:
        api = ApiClient(running.url, token=admin)
        await publish(js, *events)
        await applied(api, len(events))
        before = await sales(api)

    nats_of_own.stop()  # so the figures below can only come from the DuckDB file
    async with serve() as running:
        api = ApiClient(running.url, token=admin)
        assert await sales(api) == before
        assert headline(before) == expected_sales(confirmed_orders)
        status = (await api.get("/status")).body
        assert status["schema_version"] == SCHEMA_VERSION and status["consumer_pending"] is None
        ready = await api.get("/ready")
        assert ready.status == 503
        assert ready.body["checks"]["duckdb"] == "ok" and ready.body["checks"]["broker"].startswith("failing")
        refused = await api.post("/rebuild")
        assert refused.status == 503 and refused.body["type"].endswith("/broker-unavailable")
        assert refused.headers["Content-Type"].startswith("application/problem+json")
        assert await sales(api) == before  # the model was left alone


async def test_a_deleted_file_is_rebuilt_by_replay_at_start(serve, admin, js, settings):
    events, confirmed_orders = shop_day()
    async with serve() as running:
        api = ApiClient(running.url, token=admin)
        await publish(js, *events)
        await applied(api, len(events))
        before = await sales(api)

    path = settings.resolved_duckdb_path()
    for leftover in path.parent.glob(path.name + "*"):  # the file and any WAL
        leftover.unlink()
    async with serve() as running:
        api = ApiClient(running.url, token=admin)
        await status_when(api, lambda s: s["schema_version"] == SCHEMA_VERSION, "the startup replay")
        assert (await api.get("/status")).body["events_applied"] == len(events)
        assert await sales(api) == before
        assert headline(before) == expected_sales(confirmed_orders)


async def test_a_new_schema_version_drops_the_model_and_replays(serve, admin, js, settings):
    events, confirmed_orders = shop_day()
    async with serve() as running:
        api = ApiClient(running.url, token=admin)
        await publish(js, *events)
        await applied(api, len(events))
        before = await sales(api)

    # As if an older release wrote the file; plus a row no event explains, which must not survive.
    add_ghost_order(settings, schema_version=SCHEMA_VERSION - 1)
    async with serve() as running:
        api = ApiClient(running.url, token=admin)
        await status_when(api, lambda s: s["schema_version"] == SCHEMA_VERSION, "the startup replay")
        assert await sales(api) == before
        assert headline(before) == expected_sales(confirmed_orders)


async def test_reports_are_for_admins_only(reports, mint):
    customer = ApiClient(reports.url, token=mint.token("customer-1", role="customer"))
    anonymous = ApiClient(reports.url)
    for method, path in (("GET", "/sales"), ("GET", "/status"), ("POST", "/rebuild")):
        forbidden = await customer.request(method, path)
        assert forbidden.status == 403, path
        assert forbidden.headers["Content-Type"].startswith("application/problem+json")
        assert forbidden.body["type"].endswith("/forbidden")
        assert (await anonymous.request(method, path)).status == 401


async def test_ready_checks_duckdb_and_broker(api):
    async def ready():
        reply = await api.get("/ready")
        return reply if reply.status == 200 else None

    reply = await wait_until(ready, what="readiness")
    assert reply.body["checks"] == {"duckdb": "ok", "broker": "ok"}
