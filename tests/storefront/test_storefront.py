"""The storefront in a real Chromium against the whole system: a customer registers, browses,
fills a cart, checks out and watches the order's outcome arrive by itself; the declined card, the
sold-out product, the cancellation with its refund; a double-submitted checkout is one order; the
admin changes a stock level; the catalog still browses with orders killed; and the web hygiene
(CSRF, security headers, cookies, error pages). No sleeps: Playwright's expect waits.

MICROSHOP_SCREENSHOTS=1 also saves docs/images/storefront-*.png."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.asyncio(loop_scope="module")

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
APPROVED, DECLINED = "4242 4242 4242 4242", "4000 0000 0000 0002"
MUG, TEE, WATCH, NOTEBOOK = "MUG-STONEWARE-12", "TEE-ORGANIC-M", "WATCH-FIELD-LTD", "NOTEBOOK-A5-DOT"
# The saga's outcome comes by polling (orders answers PENDING at once in these tests).
OUTCOME_TIMEOUT = 20_000


def expect(target):
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(target)


async def screenshot(page, name: str, **options) -> None:
    if os.environ.get("MICROSHOP_SCREENSHOTS") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(IMAGES / f"storefront-{name}.png"), **options)


async def log_in(page, email: str, password: str) -> None:
    await page.goto("/login")
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#who")).to_be_visible()


async def add_from_catalog(page, sku: str) -> None:
    await page.goto("/")
    await page.locator(f'.product[data-sku="{sku}"] button').click()
    await expect(page.locator(".notice.ok")).to_contain_text("Added to your cart")


async def add_from_product_page(page, sku: str, quantity: int) -> None:
    await page.goto(f"/products/{sku}")
    await page.get_by_label("Quantity").fill(str(quantity))
    await page.get_by_role("button", name="Add to cart").click()
    await expect(page.locator(".notice.ok")).to_contain_text("Added to your cart")


async def fill_card(page, number: str) -> None:
    await page.goto("/checkout")
    await page.get_by_label("Card number").fill(number)
    await page.get_by_label("Expiry (MM/YY)").fill("12/30")
    await page.get_by_label("CVC").fill("123")


async def test_register_browse_fill_the_cart_and_watch_the_order_become_confirmed_by_itself(shop, page):
    await page.goto("/register")
    email = f"ada-{os.urandom(4).hex()}@example.com"
    await page.get_by_label("Name").fill("Ada")
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill("lovelace-1815-engine")
    await page.get_by_role("button", name="Register").click()
    await expect(page.locator(".notice.ok")).to_contain_text("Welcome, Ada")

    await expect(page.locator(".product")).to_have_count(8)
    await expect(page.locator(f'.product[data-sku="{MUG}"] .price')).to_have_text("$14.50")
    await expect(page.locator(f'.product[data-sku="{WATCH}"] .stock')).to_contain_text("Only 3 left")
    await screenshot(page, "catalog", full_page=True)
    await add_from_catalog(page, MUG)
    await add_from_catalog(page, TEE)
    await page.reload()  # the cart is a cookie: it survives
    await expect(page.locator("#nav-cart")).to_have_text("Cart (2)")
    await page.goto("/cart")
    await expect(page.locator("#cart tbody tr")).to_have_count(2)
    await expect(page.locator("#cart-total")).to_have_text("$38.50")

    # The processor answers slowly, so the order is still PENDING when its page first shows.
    await shop.card_processor_faults(latency_ms=1200, failure_rate=0)
    try:
        await page.get_by_role("link", name="Check out").click()
        await expect(page.locator("#test-cards")).to_contain_text("4242 4242 4242 4242")
        await page.get_by_label("Card number").fill(APPROVED)
        await page.get_by_label("Expiry (MM/YY)").fill("12/30")
        await page.get_by_label("CVC").fill("123")
        await screenshot(page, "checkout", full_page=True)
        await page.get_by_role("button", name=re.compile("Place order")).click()
        await expect(page).to_have_url(re.compile(r"/orders/[^/]+$"))
        loaded = await page.evaluate("performance.timeOrigin")
        await expect(page.locator("#status")).to_have_text("PENDING")
        await expect(page.locator("#status")).to_have_text("CONFIRMED", timeout=OUTCOME_TIMEOUT)
    finally:
        await shop.card_processor_faults(latency_ms=0, failure_rate=0)
    assert await page.evaluate("performance.timeOrigin") == loaded  # updated in place, not reloaded
    await expect(page.locator("#order-status")).to_have_attribute("data-final", "true")
    await expect(page.locator("#nav-cart")).to_have_text("Cart")  # emptied by the order
    await screenshot(page, "order-confirmed", full_page=True)

    await page.get_by_role("link", name="Orders", exact=True).click()
    await expect(page.locator("#orders tbody tr")).to_have_count(1)
    await expect(page.locator("#orders .badge")).to_have_text("CONFIRMED")
    await page.get_by_role("link", name="Notifications").click()
    await expect(page.locator("#mail-link")).to_have_attribute("href", shop.system.url("mail-catcher"))
    await expect(page.locator("#notifications")).to_contain_text("confirmed", ignore_case=True,
                                                                 timeout=OUTCOME_TIMEOUT)


async def test_a_declined_card_shows_the_reason(shop, page):
    email, password, _ = await shop.new_account()
    await log_in(page, email, password)
    await add_from_catalog(page, MUG)
    await fill_card(page, DECLINED)
    await page.get_by_role("button", name=re.compile("Place order")).click()
    await expect(page.locator("#status")).to_have_text("REJECTED", timeout=OUTCOME_TIMEOUT)
    await expect(page.locator("#reason")).to_contain_text("Payment declined: The payment was declined.")


async def test_more_than_the_stock_shows_out_of_stock(shop, page):
    email, password, _ = await shop.new_account()
    await log_in(page, email, password)
    await add_from_product_page(page, WATCH, 4)  # three in stock
    await fill_card(page, APPROVED)
    await page.get_by_role("button", name=re.compile("Place order")).click()
    await expect(page.locator("#status")).to_have_text("REJECTED", timeout=OUTCOME_TIMEOUT)
    await expect(page.locator("#reason")).to_contain_text(f"Out of stock: we do not have enough of {WATCH}")


async def test_cancelling_a_confirmed_order_shows_the_refund(shop, page):
    email, password, _ = await shop.new_account()
    await log_in(page, email, password)
    await add_from_catalog(page, MUG)
    await fill_card(page, APPROVED)
    await page.get_by_role("button", name=re.compile("Place order")).click()
    await expect(page.locator("#status")).to_have_text("CONFIRMED", timeout=OUTCOME_TIMEOUT)
    await page.get_by_role("button", name=re.compile("Cancel this order")).click()
    await expect(page.locator("#status")).to_have_text("CANCELLED", timeout=OUTCOME_TIMEOUT)
    await expect(page.locator("#refund")).to_contain_text("Refunded $14.50 to your card ending in 4242")


async def test_a_double_clicked_and_a_resubmitted_checkout_make_one_order(shop, page):
    email, password, token = await shop.new_account()
    await log_in(page, email, password)
    await add_from_catalog(page, TEE)
    await fill_card(page, APPROVED)
    form = page.locator("#checkout-form")
    fields = {name: await form.locator(f'[name="{name}"]').input_value()
              for name in ("csrf_token", "idempotency_key", "snapshot", "card_number", "expiry", "cvc")}
    await page.get_by_role("button", name=re.compile("Place order")).dblclick()
    await expect(page).to_have_url(re.compile(r"/orders/[^/]+$"))
    first = page.url
    # The same form sent again (a reload that re-posts it, or "back" and submit): the same order.
    again = await page.request.post("/checkout", form=fields)
    assert again.ok and again.url == first, (again.status, again.url, first)
    await expect(page.locator("#status")).to_have_text("CONFIRMED", timeout=OUTCOME_TIMEOUT)
    orders = await shop.api(token).get("/api/orders")
    assert orders.body["total"] == 1, orders.body


async def test_the_admin_changes_a_stock_level_and_the_catalog_shows_it(shop, page):
    await log_in(page, shop.system.admin_email, shop.system.admin_password)
    await page.get_by_role("link", name="Admin").click()
    row = page.locator(f'#stock tr[data-sku="{NOTEBOOK}"]')
    await row.get_by_label(f"On hand of {NOTEBOOK}").fill("7")
    await row.get_by_role("button", name="Save").click()
    await expect(page.locator(".notice.ok")).to_contain_text(f"{NOTEBOOK}: 7 on hand")
    await expect(row.locator(".available")).to_have_text("7")
    await screenshot(page, "admin-stock", full_page=True)
    for link, table in (("Orders", "#admin-orders"), ("Payments", "#admin-payments"), ("Sales report", "#sales")):
        await page.locator(".subnav").get_by_role("link", name=link).click()
        await expect(page.locator(table)).to_be_visible()
    await page.goto("/")
    await expect(page.locator(f'.product[data-sku="{NOTEBOOK}"] .stock')).to_have_text("In stock: 7")


async def test_a_customer_cannot_open_the_admin_pages(shop, page):
    email, password, _ = await shop.new_account()
    await log_in(page, email, password)
    answer = await page.goto("/admin/products")
    assert answer.status == 403
    await expect(page.locator("h1")).to_have_text("Staff only")


async def test_a_post_without_the_sessions_csrf_token_is_refused(shop, page):
    await page.goto("/")
    refused = await page.request.post("/cart/add", form={"sku": MUG, "quantity": "1"})
    assert refused.status == 403 and "This form has expired" in await refused.text()
    forged = await page.request.post("/cart/add", form={"sku": MUG, "quantity": "1", "csrf_token": "0" * 64})
    assert forged.status == 403
    token = await page.locator('input[name="csrf_token"]').first.input_value()
    accepted = await page.request.post("/cart/add", form={"sku": MUG, "quantity": "1", "csrf_token": token})
    assert accepted.ok


async def test_every_page_carries_the_security_headers_and_the_cookies_are_httponly_and_lax(shop, page):
    answer = await page.goto("/")
    headers = answer.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    await page.locator(f'.product[data-sku="{MUG}"] button').click()
    cookies = {cookie["name"]: cookie for cookie in await page.context.cookies()}
    for name in ("ms_session", "ms_cart"):
        assert cookies[name]["httpOnly"] and cookies[name]["sameSite"] == "Lax", cookies[name]
    assert await page.evaluate("document.cookie") == ""  # nothing a script could read
    missing = await page.goto("/no-such-page")
    assert missing.status == 404
    await expect(page.locator("h1")).to_have_text("Page not found")


async def test_on_a_phone_sized_screen_nothing_is_wider_than_the_screen(shop, browser):
    context = await browser.new_context(viewport={"width": 375, "height": 740}, base_url=shop.url)
    try:
        page = await context.new_page()
        for path in ("/", "/cart", "/login", f"/products/{MUG}"):
            await page.goto(path)
            assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), path
    finally:
        await context.close()


async def test_the_page_bench_gets_every_page_through_the_storefront_with_no_error(shop):
    from microshop_cli.pages_bench import PageBench

    result = await PageBench(shop.url, shop.system.admin_email, shop.system.admin_password).run(
        concurrency=1, seconds=1.0)
    assert [page.page for page in result.pages] == [
        "/", "/products/{sku}", "/cart", "/checkout", "/orders", "/orders/{id}", "/orders/{id}/status",
        "/notifications", "/login", "/register", "/admin/products", "/admin/orders", "/admin/payments",
        "/admin/report"]
    for page in result.pages:  # anything but a 200 (a redirect to /login, a 403, a 503) is an error
        assert not page.errors and page.latencies, page.as_dict()
        assert page.html_bytes > 0, page.as_dict()
        assert page.percentile(95) >= page.percentile(50) > 0, page.as_dict()
    assert set(result.static_bytes) == {"/static/simple.min.css", "/static/shop.css", "/static/shop.js"}
    assert all(size > 0 for size in result.static_bytes.values()), result.static_bytes


async def test_with_orders_killed_the_catalog_browses_and_checkout_says_it_is_unavailable(shop, page):
    email, password, token = await shop.new_account()
    await log_in(page, email, password)
    await add_from_catalog(page, MUG)
    await fill_card(page, APPROVED)
    shop.system.kill("orders", down_for=120)
    try:
        await page.get_by_role("button", name=re.compile("Place order")).click()
        await expect(page.locator("#problem")).to_contain_text("Ordering is unavailable right now. Please try again")
        await expect(page.get_by_label("Card number")).to_have_value(APPROVED)  # the form kept its values
        await page.goto("/")
        await expect(page.locator(".product")).to_have_count(8)
        answer = await page.goto("/orders")
        assert answer.status == 503
        await expect(page.locator("#problem")).to_contain_text("unavailable")
    finally:
        shop.system.release("orders")
        await shop.system.wait_ready("orders", timeout=60)
    orders = await shop.api(token).get("/api/orders")
    assert orders.body["total"] == 0, orders.body
