"""The operations console in a real Chromium against a whole running system: the seed's scenario
(a payment failure found from its order id in at most two clicks), the service map, and the
waterfall of a confirmed checkout, and the chaos page (a fault injected and healed, verify run),
and the services page (every service's replicas, RED charts and breakers, from their /metrics).
MICROSHOP_SCREENSHOTS=1 also saves docs/images/console-*.png."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from pathlib import Path

import pytest
from microshop_chassis.services import names
from microshop_chassis.testing import ApiClient, wait_until
from microshop_cli.chaos import Chaos
from microshop_cli.load import APPROVED_CARD, CheckoutLoad

pytestmark = pytest.mark.asyncio(loop_scope="module")

SKU = "MUG-STONEWARE-12"
IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
ERROR_RED = "rgb(192, 24, 43)"  # console.css
# The spans reach the store in each service's next export batch (every few seconds).
EXPORT_TIMEOUT = 30.0


def expect(locator):
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(locator)


async def place_order(customer, card: dict = APPROVED_CARD):
    return await customer.post("/api/orders", json={"items": [{"sku": SKU, "quantity": 1}], "payment": card},
                               headers={"Idempotency-Key": str(uuid.uuid4())})


async def traces_of(shop, **params) -> list[dict]:
    reply = await shop.telemetry.get("/api/traces", params=params)
    assert reply.status == 200, reply.body
    return reply.body


async def spans_of(shop, trace_id: str) -> list[dict]:
    reply = await shop.telemetry.get(f"/api/traces/{trace_id}")
    return reply.body["spans"] if reply.status == 200 else []


async def payments_failed_in(shop, trace_id: str) -> bool:
    """Whether the store holds payments' failed server span of this trace (its answer, its logs)."""
    return any(span["service"] == "payments" and span["kind"] == "server" and span["status"] == "error"
               for span in await spans_of(shop, trace_id))


async def screenshot(page, name: str, **options) -> None:
    if os.environ.get("MICROSHOP_SCREENSHOTS") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(IMAGES / f"console-{name}.png"), **options)


async def test_a_failed_payment_is_reached_from_a_search_by_its_order_id_in_at_most_two_clicks(shop, page):
    customer = shop.api(await shop.new_customer())
    # The processor slowed down, so the order exists (its card tokenized) before the charge is
    # answered; then every answer is a 503: the charge fails where the tokenization did not.
    await shop.card_processor_faults(latency_ms=1500, failure_rate=0)
    checkout = asyncio.create_task(place_order(customer))
    try:
        async def created() -> str | None:
            items = (await customer.get("/api/orders")).body.get("items") or []
            return items[0]["id"] if items else None

        order_id = await wait_until(created, timeout=20, what="the order to be created", interval=0.1)
        await shop.card_processor_faults(latency_ms=0, failure_rate=1)
        placed = await checkout
        assert placed.body.get("status") != "CONFIRMED", placed.body

        async def failed_charge_seen() -> bool:
            return any([await payments_failed_in(shop, trace["trace_id"])
                        for trace in await traces_of(shop, order_id=order_id, error="true")])

        await wait_until(failed_charge_seen, timeout=EXPORT_TIMEOUT, what="payments' failed span in the store")
    finally:
        await shop.card_processor_faults(latency_ms=0, failure_rate=0)
        checkout.cancel()

    # Healed: the saga's retries confirm the order. Wait until every failed trace of the order that
    # reached payments is complete in the store. (A retry may also fail in orders alone, its
    # circuit breaker to payments open: that trace names no payments span, and is not the one.)
    async def order_confirmed() -> bool:
        return (await customer.get(f"/api/orders/{order_id}")).body.get("status") == "CONFIRMED"

    await wait_until(order_confirmed, timeout=30, what="the order confirmed after the retries", interval=0.25)

    async def failed_traces_complete() -> bool:
        failed = [trace for trace in await traces_of(shop, order_id=order_id, error="true")
                  if "payments" in trace["services"]]
        return bool(failed) and all([await payments_failed_in(shop, trace["trace_id"]) for trace in failed])

    await wait_until(failed_traces_complete, timeout=EXPORT_TIMEOUT, what="the failed traces' payments spans")

    async def saga_finished_in_store() -> bool:
        return any([span["name"] == "saga commit_stock"
                    for trace in await traces_of(shop, order_id=order_id)
                    for span in await spans_of(shop, trace["trace_id"])])

    await wait_until(saga_finished_in_store, timeout=EXPORT_TIMEOUT, what="the saga's last step in the store",
                     interval=0.25)

    await page.goto(f"{shop.console_url}/traces")
    await page.fill("#search input[name=order_id]", order_id)
    await page.press("#search input[name=order_id]", "Enter")  # the search itself, not a click
    # A failed trace that crossed payments (its row lists the services).
    failing = page.locator("#results tr.failing", has_text="payments").locator("a.trace-link")
    await expect(failing.first).to_be_visible()

    await failing.first.click()  # the one click: the waterfall, opened and scrolled on the failure
    opened = page.locator("#waterfall details.span[open]")
    await expect(opened).to_have_count(1)
    await expect(opened).to_have_attribute("data-service", "payments")
    await expect(opened).to_have_class("span error")
    await expect(opened).to_be_in_viewport()
    await expect(opened.locator("summary")).to_have_css("color", ERROR_RED)
    await expect(opened.locator(".status")).to_have_text("error")
    await expect(opened.locator(".attributes")).to_contain_text("processor-unavailable")
    await expect(opened.locator(".attributes")).to_contain_text("503")
    # Its log lines: the processor's 503 (or, after a few, payments' breaker open), and the answer.
    await expect(opened.locator(".logs")).to_contain_text(re.compile(r"card_processor_un(available|reachable)"))
    await expect(opened.locator(".logs")).to_contain_text("status=503")
    await screenshot(page, "waterfall")

    await page.click(f"text=order {order_id}")
    charges = page.locator('#saga li[data-step="charge_payment"]')
    await expect(charges.first).to_have_class("step failed")
    await expect(charges.first).to_have_css("color", ERROR_RED)
    await expect(charges.last).to_have_class("step ok retry")  # healed: a later attempt went through
    await expect(page.locator("#saga li").last).to_have_attribute("data-step", "commit_stock")
    await expect(page.locator("#outcome")).to_contain_text("done")
    await screenshot(page, "saga", full_page=True)

    await page.goto(f"{shop.console_url}/")
    await expect(page.locator('#service-map [data-node="payments"]')).to_be_visible()
    await screenshot(page, "map", full_page=True)


async def test_the_map_shows_every_service_the_broker_the_databases_the_card_processor_and_smtp(shop, page):
    load = CheckoutLoad(shop.gateway_url, rate=10, customers=2, declined=0.25, sold_out=0, cancel=0)
    result = await load.run(checkouts=4)
    assert any(attempt.order_status == "CONFIRMED" for attempt in result.attempts)
    # The storefront is traced when a browser asks it for a page (the load goes to the gateway).
    assert (await ApiClient(shop.system.url("storefront")).get("/")).status == 200

    async def every_service_traced() -> bool:
        mail_delivered = any(found["root_name"] == "SMTP deliver"
                             for found in await traces_of(shop, service="notifications", limit=50))
        return mail_delivered and all([await traces_of(shop, service=name, limit=1) for name in names()])

    await wait_until(every_service_traced, timeout=EXPORT_TIMEOUT, what="spans of every service and of a mail")
    await page.goto(f"{shop.console_url}/")
    for node in [*names(), "nats", "card-processor", "smtp"]:
        await expect(page.locator(f'#service-map [data-node="{node}"]')).to_be_visible()
    await expect(page.locator("#service-map .node.database").first).to_be_visible()
    gateway_to_orders = page.locator('#service-map .edge[data-source="gateway"][data-target="orders"] text')
    await expect(gateway_to_orders).to_contain_text("/s")
    await expect(gateway_to_orders).to_contain_text("p99")


async def test_the_waterfall_of_a_confirmed_checkout_shows_every_service_it_crossed_and_its_consumers(shop, page):
    customer = shop.api(await shop.new_customer())
    placed = await place_order(customer)
    assert placed.body["status"] == "CONFIRMED", placed.body
    crossed = {"gateway", "orders", "inventory", "payments", "notifications", "reports"}

    async def checkout_trace() -> str | None:
        for trace in await traces_of(shop, order_id=placed.body["id"]):
            spans = await spans_of(shop, trace["trace_id"])
            consumers = {span["service"] for span in spans if span["kind"] == "consumer"}
            if {span["service"] for span in spans} >= crossed and consumers >= {"notifications", "reports"}:
                return trace["trace_id"]
        return None

    trace_id = await wait_until(checkout_trace, timeout=EXPORT_TIMEOUT, what="the whole checkout trace")
    await page.goto(f"{shop.console_url}/traces?order_id={placed.body['id']}")
    await page.click(f"#results a.trace-link:has-text('{trace_id}')")
    await expect(page.locator("h1")).to_contain_text(trace_id)
    for service in sorted(crossed):
        await expect(page.locator(f'#waterfall details.span[data-service="{service}"]').first).to_be_visible()
    for consumer in ("notifications", "reports"):
        consumed = page.locator(f'#waterfall details.span[data-kind="consumer"][data-service="{consumer}"]')
        await expect(consumed.first).to_contain_text("consume Order")
    await expect(page.locator("#waterfall details.span.error")).to_have_count(0)


# verify's invariants: number, name, and a word of their figures.
INVARIANTS = [(1, "stock conservation", "received"), (2, "money", "CONFIRMED total"),
              (3, "orders terminal", "CONFIRMED"), (4, "effects once", "e-mails"),
              (5, "outbox and consumers drained", "outbox/lag/dead-lettered"), (6, "reports converge", "revenue")]


async def test_a_fault_injected_and_healed_from_the_chaos_page_then_verify_shows_every_invariant_holding(shop, page):
    customer = shop.api(await shop.new_customer())
    await page.goto(f"{shop.console_url}/")
    await page.click("nav a:has-text('Chaos')")
    errors = page.locator('#inject form[data-fault="error_rate"]')
    await errors.locator("select[name=target]").select_option("payments")
    await errors.locator("input[name=percent]").fill("100")
    try:
        await errors.locator("button").click()
        await expect(page.locator("#flash")).to_contain_text("injected error-rate payments rate=1.0; until healed")
        fault = page.locator('#faults tr[data-target="payments"][data-fault="error_rate"]')
        await expect(fault).to_contain_text("percent=100")
        await expect(fault).to_contain_text("when healed")

        refused = await place_order(customer)  # orders' call to payments answered 503 by the proxy
        assert refused.status == 503, refused.body
        assert refused.body["type"].endswith("/checkout-unavailable"), refused.body
        assert "chaos proxy" in refused.body.get("cause", ""), refused.body
        await screenshot(page, "chaos", full_page=True)

        await fault.locator("button", has_text="Heal payments").click()
        await expect(page.locator("#flash")).to_contain_text("healed payments")
        await expect(page.locator("#no-faults")).to_be_visible()
    finally:  # whatever failed above, no fault outlives the test
        await Chaos(shop.system.paths, shop.system.state).heal()

    placed = await place_order(customer)
    assert placed.body.get("status") == "CONFIRMED", placed.body

    await page.fill("#verify-form input[name=settle_seconds]", "60")
    await page.click("#verify-form button")
    # Verify waits until the system is quiet (up to the settle time) before it answers.
    await expect(page.locator("#flash")).to_contain_text("verify: all 6 invariants hold", timeout=120_000)
    await expect(page.locator("#verify-outcome")).to_contain_text("every invariant holds")
    await expect(page.locator("#checks tbody tr")).to_have_count(len(INVARIANTS))
    for number, name, figure in INVARIANTS:
        row = page.locator(f'#checks tr[data-number="{number}"]')
        await expect(row.locator("td").nth(1)).to_have_text(name)
        await expect(row.locator(".result")).to_have_text("pass")
        await expect(row.locator(".figures")).to_contain_text(figure)
        await expect(row.locator(".problems li")).to_have_count(0)
    await screenshot(page, "verify", full_page=True)


async def test_a_form_on_another_site_cannot_inject_a_fault_through_the_console(shop, page):
    await page.goto(f"{shop.gateway_url}/health")  # another origin: the gateway's port on the same host
    await page.set_content(f'<form method="post" action="{shop.console_url}/chaos/faults">'
                           '<input name="fault" value="error_rate"><input name="target" value="payments">'
                           '<input name="percent" value="100"><button>send</button></form>')
    async with page.expect_navigation() as navigation:
        await page.click("button")
    answer = await navigation.value
    assert answer.status == 403
    assert answer.headers["content-type"] == "application/problem+json"
    assert "the console's own page" in await answer.text()
    proxies = await Chaos(shop.system.paths, shop.system.state).proxies()
    assert proxies["payments"]["toxics"] == [] and proxies["payments"]["enabled"]


async def test_the_services_page_shows_every_service_up_with_its_rate_charted_and_its_breakers_closed(shop, page):
    # The launcher's targets: every service process, in Prometheus file_sd form.
    targets = json.loads(shop.system.paths.scrape_targets_file.read_text())
    assert sorted(group["labels"]["service"] for group in targets) == sorted(names())

    async def scraped() -> dict:
        report = (await shop.telemetry.get("/api/services")).body
        services = {service["service"]: service for service in report["services"]}
        up = set(services) == set(names()) and all(service["replicas_up"] == len(service["replicas"]) == 1
                                                    for service in services.values())
        return services if up else {}

    # A rate needs two scrapes: the checkouts come after a first one.
    await wait_until(scraped, timeout=20, what="every service scraped", interval=0.25)
    customer = shop.api(await shop.new_customer())
    for _ in range(2):
        placed = await place_order(customer)
        assert placed.body.get("status") == "CONFIRMED", placed.body

    async def orders_busy_and_breakers_closed() -> bool:
        services = await scraped()
        return (bool(services) and (services["orders"]["current"]["rate"] or 0) > 0
                # An earlier test's faults may have left a breaker open until its next call succeeds.
                and all(breaker["state"] == "closed" for service in services.values()
                        for breaker in service["breakers"]))

    await wait_until(orders_busy_and_breakers_closed, timeout=20, what="orders' rate and every breaker closed",
                     interval=0.5)
    await page.goto(f"{shop.console_url}/")
    await page.click("nav a:has-text('Services')")
    for name in names():
        await expect(page.locator(f'#services-summary tr[data-service="{name}"] .replicas-up')).to_have_text("1 / 1")
        replica = page.locator(f'#service-{name} tr.replica[data-instance="{name}"]')
        await expect(replica).to_have_attribute("data-up", "true")
        await expect(replica.locator(".up")).to_contain_text("up (")
    orders = page.locator('#services-summary tr[data-service="orders"]')
    assert float(await orders.locator(".rate").inner_text()) > 0
    await expect(orders.locator('.breaker[data-target="payments"]')).to_have_attribute("data-state", "closed")
    await expect(page.locator('.breaker[data-state="open"]')).to_have_count(0)
    rate_chart = page.locator('.chart[data-service="orders"][data-figure="rate"]')
    await expect(rate_chart.locator("canvas")).to_be_visible()
    await expect(rate_chart).to_have_attribute("data-points", re.compile(r"^[1-9][0-9]*$"))
    await screenshot(page, "services", full_page=True)
