"""The store, walked end to end through the gateway, with every part a real process:
register, log in, browse, order (approved, declined, out of stock), replay, cancel, e-mail once,
sales report, and a checkout whose orders process is SIGKILLed mid-saga."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

import aiohttp
import pytest
from microshop_chassis.testing import ApiClient, wait_until
from microshop_cli.bench import Bench
from microshop_cli.catalog import DEMO_CATALOG, LOW_STOCK_SKU
from microshop_cli.trace import find_traces, trace_command
from rich.console import Console

pytestmark = pytest.mark.asyncio(loop_scope="module")

APPROVED = {"card_number": "4242424242424242", "expiry_month": 12, "expiry_year": 2031, "cvc": "123"}
DECLINED = {**APPROVED, "card_number": "4000000000000002"}
NO_FUNDS = {**APPROVED, "card_number": "4000000000009995"}
SKU = "MUG-STONEWARE-12"


def body(sku: str = SKU, quantity: int = 1, card: dict = APPROVED) -> dict:
    return {"items": [{"sku": sku, "quantity": quantity}], "payment": card}


async def order(shop, token: str, payload: dict, key: str | None = None):
    headers = {"Idempotency-Key": key or str(uuid.uuid4())}
    return await shop.api(token).post("/api/orders", json=payload, headers=headers)


async def stock_of(shop, sku: str) -> dict:
    reply = await shop.api(shop.admin_token).get("/api/inventory/stock", params={"limit": 1000})
    assert reply.status == 200
    return next(item for item in reply.body["items"] if item["sku"] == sku)


async def charges_for(shop, order_id: str) -> list[dict]:
    """What the card processor (the outside PSP) holds for this order's idempotency key."""
    reply = await shop.card_processor.get("/v1/charges", params={"idempotency_key": f"order-{order_id}"})
    return reply.body["items"]


async def mails(shop, order_id: str, event_type: str | None = None) -> list[dict]:
    reply = await shop.mail.get("/api/messages", params={"header": f"X-Order-Id:{order_id}", "limit": 1000})
    items = reply.body["items"]
    if event_type:
        items = [m for m in items if m["headers"].get("X-Microshop-Event-Type") == event_type]
    return items


async def test_browse_the_catalog_without_logging_in(shop):
    reply = await shop.gateway.get("/api/inventory/products")
    assert reply.status == 200
    assert {p["sku"] for p in reply.body["items"]} >= {item.sku for item in DEMO_CATALOG}
    mug = await shop.gateway.get(f"/api/inventory/products/{SKU}")
    assert mug.body["price_cents"] == next(i.price_cents for i in DEMO_CATALOG if i.sku == SKU)
    missing = await shop.gateway.get("/api/inventory/products/NOPE")
    assert missing.status == 404 and missing.headers["Content-Type"].startswith("application/problem+json")


async def test_register_login_and_who_am_i(shop):
    token, email = await shop.new_customer()
    me = await shop.api(token).get("/api/users/me")
    assert me.status == 200 and me.body["email"] == email and me.body["role"] == "customer"
    # A taken e-mail is answered like a new one (nothing tells who has an account) and changes nothing.
    again = await shop.gateway.post("/api/users/register",
                                    json={"email": email, "password": "bramble-kettle-42", "name": "X"})
    assert again.status == 202 and again.body["email"] == email
    assert (await shop.gateway.post("/api/users/login",
                                    json={"email": email, "password": "bramble-kettle-42"})).status == 401
    wrong = await shop.gateway.post("/api/users/login", json={"email": email, "password": "not-it-at-all"})
    assert wrong.status == 401
    bad = await shop.gateway.post("/api/users/register", json={"email": "nope", "password": "1", "name": ""})
    assert bad.status == 422 and bad.body["type"].endswith("/validation-error")


async def test_approved_checkout_confirms_and_takes_stock_and_money(shop):
    token, _ = await shop.new_customer()
    before = await stock_of(shop, SKU)
    reply = await order(shop, token, body(quantity=2))
    assert reply.status == 201, reply.body
    placed = reply.body
    assert placed["status"] == "CONFIRMED" and placed["reason"] is None
    assert placed["total_cents"] == 2 * placed["items"][0]["unit_price_cents"]
    after = await stock_of(shop, SKU)
    assert after["on_hand"] == before["on_hand"] - 2 and after["reserved"] == before["reserved"]
    payment = await shop.api(token).get(f"/api/payments/{placed['id']}")
    assert payment.status == 200 and payment.body["status"] == "CAPTURED"
    assert payment.body["amount_cents"] == placed["total_cents"] and payment.body["card_last4"] == "4242"
    assert len(await charges_for(shop, placed["id"])) == 1
    stranger, _ = await shop.new_customer()
    assert (await shop.api(stranger).get(f"/api/orders/{placed['id']}")).status == 404
    assert (await shop.api(stranger).get(f"/api/payments/{placed['id']}")).status == 404


@pytest.mark.parametrize(("card", "code"), [(DECLINED, "card_declined"), (NO_FUNDS, "insufficient_funds")])
async def test_declined_card_rejects_and_gives_the_stock_back(shop, card, code):
    token, _ = await shop.new_customer()
    before = await stock_of(shop, SKU)
    reply = await order(shop, token, body(quantity=3, card=card))
    assert reply.status == 201
    # The customer learns that the card was declined, never why (card testers would); admins do.
    assert reply.body["status"] == "REJECTED" and reply.body["reason"] == "The payment was declined."
    assert await stock_of(shop, SKU) == before
    payment = await shop.api(token).get(f"/api/payments/{reply.body['id']}")
    assert payment.body["status"] == "DECLINED" and payment.body["decline_code"] == "declined"
    seen_by_admin = await shop.api(shop.admin_token).get(f"/api/payments/{reply.body['id']}")
    assert seen_by_admin.body["decline_code"] == code


async def test_out_of_stock_rejects_with_nothing_held_or_charged(shop):
    token, _ = await shop.new_customer()
    before = await stock_of(shop, LOW_STOCK_SKU)
    reply = await order(shop, token, body(sku=LOW_STOCK_SKU, quantity=before["on_hand"] + 1))
    assert reply.status == 201
    assert reply.body["status"] == "REJECTED" and LOW_STOCK_SKU in reply.body["reason"]
    assert await stock_of(shop, LOW_STOCK_SKU) == before
    assert (await shop.api(token).get(f"/api/payments/{reply.body['id']}")).status == 404
    assert await charges_for(shop, reply.body["id"]) == []


async def test_idempotent_replay_returns_the_same_order_and_charges_once(shop):
    token, _ = await shop.new_customer()
    key = str(uuid.uuid4())
    first = await order(shop, token, body(), key=key)
    replays = await asyncio.gather(*(order(shop, token, body(), key=key) for _ in range(3)))
    assert {r.body["id"] for r in replays} == {first.body["id"]}
    assert all(r.headers.get("Idempotent-Replayed") == "true" for r in replays)
    assert len(await charges_for(shop, first.body["id"])) == 1
    other = await order(shop, token, body(quantity=5), key=key)
    assert other.status == 422 and other.body["type"].endswith("/idempotency-key-reused")
    missing = await shop.api(token).post("/api/orders", json=body())
    assert missing.status == 400
    listed = await shop.api(token).get("/api/orders")
    assert listed.body["total"] == 1


async def test_cancel_refunds_restocks_and_mails_each_step_once(shop):
    token, email = await shop.new_customer()
    placed = (await order(shop, token, body(quantity=4))).body
    assert placed["status"] == "CONFIRMED"
    stock_before_cancel = await stock_of(shop, SKU)
    cancelled = await shop.api(token).post(f"/api/orders/{placed['id']}/cancel")
    assert cancelled.status == 200 and cancelled.body["status"] == "CANCELLED"
    assert (await stock_of(shop, SKU))["on_hand"] == stock_before_cancel["on_hand"] + 4
    payment = await shop.api(token).get(f"/api/payments/{placed['id']}")
    assert payment.body["status"] == "REFUNDED"
    again = await shop.api(token).post(f"/api/orders/{placed['id']}/cancel")
    assert again.status == 409

    # Notifications handles an order's events in stream order: once the cancellation mail is in,
    # the confirmation mail was handled before it, so counting it now is final.
    await wait_until(lambda: mails(shop, placed["id"], "OrderCancelled"), timeout=20, what="cancellation mail")
    assert len(await mails(shop, placed["id"], "OrderConfirmed")) == 1
    assert len(await mails(shop, placed["id"], "OrderCancelled")) == 1
    assert all(m["rcpt_to"] == [email] for m in await mails(shop, placed["id"]))
    listed = await shop.api(token).get("/api/notifications")
    mine = [n for n in listed.body["items"] if n["order_id"] == placed["id"]]
    assert sorted(n["type"] for n in mine) == ["order_cancelled", "order_confirmed"]


async def test_sales_report_matches_the_orders(shop):
    admin = shop.api(shop.admin_token)

    async def expected() -> dict:
        confirmed = (await admin.get("/api/orders", params={"status": "CONFIRMED", "limit": 1000})).body["items"]
        by_sku: dict[str, list[int]] = {}
        for o in confirmed:
            for line in o["items"]:
                units, revenue = by_sku.setdefault(line["sku"], [0, 0])
                by_sku[line["sku"]] = [units + line["quantity"], revenue + line["quantity"] * line["unit_price_cents"]]
        return {
            "orders_confirmed": len(confirmed),
            "revenue_cents": sum(o["total_cents"] for o in confirmed),
            "units_sold": sum(units for units, _ in by_sku.values()),
            "by_product": {sku: {"units": u, "revenue_cents": r} for sku, (u, r) in by_sku.items()},
        }

    async def report_matches():
        report = (await admin.get("/api/reports/sales")).body
        seen = {
            "orders_confirmed": report["orders_confirmed"],
            "revenue_cents": report["revenue_cents"],
            "units_sold": report["units_sold"],
            "by_product": {p["sku"]: {"units": p["units"], "revenue_cents": p["revenue_cents"]}
                           for p in report["by_product"]},
        }
        return seen == await expected()

    assert (await expected())["orders_confirmed"] >= 2  # the earlier tests confirmed (and cancelled) orders
    await wait_until(report_matches, timeout=20, what="the sales report to catch up with the orders")
    customer, _ = await shop.new_customer()
    assert (await shop.api(customer).get("/api/reports/sales")).status == 403


async def test_saga_resumes_after_orders_is_killed_mid_checkout(shop):
    token, _ = await shop.new_customer()
    admin = shop.api(shop.admin_token)
    before = await stock_of(shop, SKU)
    # A slow card processor holds the saga in its charge step long enough to kill orders there.
    await shop.card_processor.put("/_admin/config", json={"latency_ms": 2000})
    try:
        checkout = asyncio.create_task(order(shop, token, body(quantity=1)))

        async def order_charging():
            pending = (await admin.get("/api/orders", params={"status": "PENDING", "limit": 1000})).body["items"]
            for candidate in pending:
                saga = (await admin.get(f"/api/orders/{candidate['id']}/saga")).body
                if saga.get("step") == "charge_payment" and candidate["customer_id"] == me["id"]:
                    return candidate
            return None

        me = (await shop.api(token).get("/api/users/me")).body
        victim = await wait_until(order_charging, timeout=15, what="an order in its charge step")
        old_pid = shop.system.kill("orders", signal.SIGKILL)
        try:
            answer = await checkout
        except aiohttp.ClientConnectionError:
            assert shop.monolith  # the one process went down, and the public port with it
        else:
            assert answer.status >= 500  # the gateway's connection to orders went down with it
    finally:
        await shop.card_processor.put("/_admin/config", json={"latency_ms": 0})
    new_pid = await shop.system.wait_ready("orders", timeout=30)
    assert new_pid != old_pid and shop.system.restarts("orders") >= 1

    async def confirmed():
        reply = await shop.api(token).get(f"/api/orders/{victim['id']}")
        return reply.status == 200 and reply.body["status"] == "CONFIRMED"

    await wait_until(confirmed, timeout=30, what="the restarted orders to finish the saga")
    assert len(await charges_for(shop, victim["id"])) == 1  # charged exactly once across the crash
    payment = (await shop.api(token).get(f"/api/payments/{victim['id']}")).body
    assert payment["status"] == "CAPTURED"
    after = await stock_of(shop, SKU)
    assert after["on_hand"] == before["on_hand"] - 1 and after["reserved"] == before["reserved"]
    await wait_until(lambda: mails(shop, victim["id"], "OrderConfirmed"), timeout=20, what="confirmation mail")


async def test_gateway_health_reports_every_service(shop):
    health = await shop.gateway.get("/health")
    assert health.status == 200 and health.body["status"] == "ok"
    assert set(health.body["services"]) == {"users", "inventory", "orders", "payments", "notifications", "reports"}
    assert all(s["status"] == "ok" for s in health.body["services"].values())


async def test_every_service_serves_metrics_and_its_openapi(shop):
    for name in ("users", "inventory", "orders", "payments", "notifications", "reports"):
        # An admin's token, as the monolith's public port asks for it (a service's own port does not).
        text = (await ApiClient(shop.system.url(name), shop.admin_token).get("/metrics")).body
        assert "http_server_requests_total" in text, name
        if shop.monolith:  # on the public port: not for anyone without that token
            assert (await ApiClient(shop.system.url(name)).get("/metrics")).status == 401, name
        schema = await shop.gateway.get(f"/api/{name}/openapi.json")
        assert schema.status == 200 and schema.body["paths"], name


async def test_one_checkout_is_one_trace_across_the_services(shop):
    """The gateway's request id and W3C trace context travel with every call, so each service's
    JSON access log names the same trace for one checkout."""
    token, _ = await shop.new_customer()
    request_id = f"trace-{uuid.uuid4().hex}"
    reply = await shop.api(token).post(
        "/api/orders", json=body(), headers={"Idempotency-Key": str(uuid.uuid4()), "X-Request-ID": request_id}
    )
    assert reply.status == 201 and reply.headers["X-Request-ID"] == request_id

    def traces_by_service() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for service in ("gateway", "orders", "inventory", "payments"):
            log_file = shop.system.paths.log_file(shop.system.component(service).name)  # the monolith's: one file
            for line in log_file.read_text().splitlines():
                if request_id in line and line.startswith("{"):
                    entry = json.loads(line)
                    ours = entry.get("request_id") == request_id and entry.get("service") == service
                    if ours and "trace_id" in entry:
                        found.setdefault(service, set()).add(entry["trace_id"])
        return found

    async def all_logged():
        found = traces_by_service()
        return found if len(found) == 4 else None

    found = await wait_until(all_logged, timeout=10, what="every hop's log line")
    assert len(set().union(*found.values())) == 1, found


async def test_a_checkout_is_one_stored_trace_through_every_service_and_the_consumers(shop):
    """Every service exports its spans to the launcher's telemetry receiver; `microshop trace
    ORDER_ID` finds the checkout's trace there: the gateway, orders, inventory, payments with their
    statements, the card processor call, each event's publish and the consumers of notifications
    and reports (across the outbox), and draws it."""
    token, _ = await shop.new_customer()
    reply = await shop.api(token).post("/api/orders", json=body(), headers={"Idempotency-Key": str(uuid.uuid4())})
    assert reply.status == 201 and reply.body["status"] == "CONFIRMED"
    order_id, receiver = reply.body["id"], shop.system.url("telemetry")
    wanted = {("gateway", "server"), ("orders", "server"), ("inventory", "server"), ("payments", "server"),
              ("orders", "producer"), ("payments", "producer"), ("notifications", "consumer"),
              ("reports", "consumer"), ("payments", "client"), ("orders", "client")}

    seen: set = set()

    async def whole_trace():
        traces = await asyncio.to_thread(find_traces, order_id, receiver)
        seen.update((span["service"], span["kind"]) for spans in traces for span in spans)
        return traces if wanted <= seen else None

    try:
        [spans] = await wait_until(whole_trace, timeout=30, what="the checkout's spans from every service")
    except TimeoutError:
        pytest.fail(f"spans never stored: {sorted(wanted - seen)}")
    assert len({span["trace_id"] for span in spans}) == 1
    by_id = {span["span_id"]: span for span in spans}
    consumer = next(s for s in spans if s["service"] == "notifications" and s["kind"] == "consumer")
    assert by_id[consumer["parent_span_id"]]["kind"] == "producer"  # its parent: the publish, across the outbox
    assert any(s["service"] == "payments" and s["name"].startswith("transaction ") and s["kind"] == "client"
               for s in spans)  # the database's units of work (named after the database)
    steps = [s["attributes"].get("microshop.saga.step") for s in spans if s["name"].startswith("saga ")]
    assert steps == ["reserve_stock", "charge_payment", "commit_stock"], steps  # the saga's timeline
    assert all(s["attributes"]["microshop.order.id"] == order_id for s in spans if s["name"].startswith("saga "))
    console = Console(record=True, width=200)
    assert trace_command(order_id, receiver, console) == 0
    drawn = console.export_text()
    assert "POST /orders" in drawn and "consume OrderConfirmed" in drawn


async def test_bench_drives_checkouts_and_reports_every_figure_it_prints(shop):
    system = shop.system
    pids = {name: system.pid(name) for name in system.names}
    urls = {name: system.url(name) for name in system.names if system.component(name).service}
    runner = Bench(system.url("gateway"), system.admin_email, system.admin_password, pids, urls=urls,
                   telemetry_url=system.url("telemetry"), mail_catcher_url=system.url("mail-catcher"))
    figures = (await runner.run(checkouts=10, concurrency=2)).as_dict()
    assert figures["confirmed"] == 10 and figures["outcomes"] == {"CONFIRMED": 10}
    orders = system.component("orders").name  # the monolith's process runs orders
    assert figures["processes"][orders]["requests"] >= 10  # a POST /orders per checkout (and any polls)
    assert figures["processes"][orders]["cpu_s"] > 0
    assert figures["read_model_lag_seconds"] is not None
    # The CPU was counted until the checkouts' mail had gone out too.
    assert figures["drained_seconds"] is not None and figures["drained_seconds"] >= figures["read_model_lag_seconds"]
    # One more checkout, then its trace is found by its order id, as the console's search finds it.
    assert figures["trace_searchable_seconds"] is not None and figures["trace_searchable_seconds"] < 30
