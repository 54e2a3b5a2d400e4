"""The customer's pages: catalog, product, cart, register, log in and out, checkout, orders (with
the live status while the checkout saga runs), cancel, notifications."""

from __future__ import annotations

import re
from datetime import date

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .cookies import MAX_QUANTITY, add_to_cart, read_cart, set_quantity
from .shop import KeyReused, NotFound, SessionExpired, ShopError, Unavailable
from .web import PostForm, WebDep, new_checkout_key, safe_next

router = APIRouter(include_in_schema=False)

# The card processor's test cards (sims/card-processor/README.md), explained on the checkout form.
TEST_CARDS = (
    ("4242 4242 4242 4242", "approved"),
    ("4000 0000 0000 0002", "declined (card declined)"),
    ("4000 0000 0000 9995", "declined (insufficient funds)"),
)
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _quantity(text: str | None, default: int = 1) -> int:
    try:
        return int((text or "").strip() or default)
    except ValueError:
        return -1  # refused by the cart's checks with a message


# --- catalog --------------------------------------------------------------------------------------


@router.get("/")
async def catalog(request: Request, web: WebDep) -> Response:
    try:
        products = await web.shop.products()
    except ShopError as error:
        return web.render(request, "catalog.html", status=503, products=[], problem=str(error))
    return web.render(request, "catalog.html", products=products, problem=None)


@router.get("/products/{sku}")
async def product(sku: str, request: Request, web: WebDep) -> Response:
    try:
        item = await web.shop.product(sku)
    except NotFound:
        return web.error_page(request, 404, "No such product", "This product is not in the catalog.")
    except ShopError as error:
        return web.render(request, "product.html", status=503, item=None, problem=str(error))
    return web.render(request, "product.html", item=item, problem=None, max_quantity=MAX_QUANTITY)


# --- cart -----------------------------------------------------------------------------------------


async def _cart_lines(web, cart: dict[str, int]) -> tuple[list[dict], str | None]:
    """Each line with its product (name, price, availability); a problem when the catalog cannot answer."""
    if not cart:
        return [], None
    try:
        products = {item["sku"]: item for item in await web.shop.products()}
    except ShopError as error:
        return [{"sku": sku, "quantity": quantity, "product": None} for sku, quantity in cart.items()], str(error)
    return [{"sku": sku, "quantity": quantity, "product": products.get(sku)} for sku, quantity in cart.items()], None


@router.get("/cart")
async def cart_page(request: Request, web: WebDep) -> Response:
    cart = web.cart(request)
    lines, problem = await _cart_lines(web, cart)
    total = sum(line["product"]["price_cents"] * line["quantity"] for line in lines if line["product"])
    return web.render(request, "cart.html", lines=lines, total=total, problem=problem, max_quantity=MAX_QUANTITY)


@router.post("/cart/add")
async def cart_add(request: Request, web: WebDep, form: PostForm) -> Response:
    session, cart = web.session(request), web.cart(request)
    sku = form.get("sku", "")
    try:
        cart = add_to_cart(cart, sku, _quantity(form.get("quantity")))
    except ValueError as error:
        session.flash("error", str(error))
        return web.redirect(request, safe_next(form.get("back")))
    session.flash("ok", f"Added to your cart: {form.get('name') or sku}.")
    return web.redirect(request, safe_next(form.get("back") or "/cart"), cart=cart)


@router.post("/cart/update")
async def cart_update(request: Request, web: WebDep, form: PostForm) -> Response:
    session, cart = web.session(request), web.cart(request)
    quantity = 0 if "remove" in form else _quantity(form.get("quantity"), default=0)
    try:
        cart = set_quantity(cart, form.get("sku", ""), quantity)
    except ValueError as error:
        session.flash("error", str(error))
        return web.redirect(request, "/cart")
    session.flash("ok", "Removed from your cart." if quantity == 0 else "Cart updated.")
    return web.redirect(request, "/cart", cart=cart)


# --- accounts -------------------------------------------------------------------------------------


@router.get("/register")
async def register_form(request: Request, web: WebDep) -> Response:
    return web.render(request, "register.html", values={}, errors={}, problem=None)


@router.post("/register")
async def register(request: Request, web: WebDep, form: PostForm) -> Response:
    values = {"email": form.get("email", "").strip(), "name": form.get("name", "").strip()}
    password = form.get("password", "")
    errors = {}
    if not EMAIL.match(values["email"]):
        errors["email"] = "Enter an e-mail address, like ada@example.com."
    if not values["name"]:
        errors["name"] = "Enter your name."
    if len(password) < 8:
        errors["password"] = "At least 8 characters."
    if errors:
        return web.render(request, "register.html", status=422, values=values, errors=errors,
                          problem="Please correct the fields marked below.")
    try:
        await web.shop.register(values["email"], password, values["name"])
        session_data = await web.shop.login(values["email"], password)
        me = await web.shop.me(session_data["access_token"])
    except ShopError as error:
        return web.render(request, "register.html", status=_status(error), values=values, errors=error.fields,
                          problem=str(error))
    _log_in(web.session(request), session_data, me)
    web.session(request).flash("ok", f"Welcome, {me['name']}! Your account is ready.")
    return web.redirect(request, safe_next(form.get("next") or "/"))


@router.get("/login")
async def login_form(request: Request, web: WebDep, next: str = "/") -> Response:  # noqa: A002 - the query's name
    return web.render(request, "login.html", values={}, problem=None, next=safe_next(next))


@router.post("/login")
async def login(request: Request, web: WebDep, form: PostForm) -> Response:
    values = {"email": form.get("email", "").strip()}
    target = safe_next(form.get("next"))
    try:
        session_data = await web.shop.login(values["email"], form.get("password", ""))
        me = await web.shop.me(session_data["access_token"])
    except ShopError as error:
        return web.render(request, "login.html", status=_status(error), values=values, problem=str(error),
                          next=target)
    _log_in(web.session(request), session_data, me)
    web.session(request).flash("ok", f"Logged in as {me['email']}.")
    return web.redirect(request, target)


@router.post("/logout")
async def logout(request: Request, web: WebDep, form: PostForm) -> Response:
    session = web.session(request)
    session.log_out()
    session.flash("ok", "You are logged out.")
    return web.redirect(request, "/")


def _log_in(session, token: dict, me: dict) -> None:
    session.log_in(token=token["access_token"], expires_in=int(token.get("expires_in", 3600)), email=me["email"],
                   name=me.get("name", ""), role=me.get("role", "customer"))


def _status(error: ShopError) -> int:
    if isinstance(error, Unavailable):
        return 503
    return error.status if 400 <= error.status < 500 else 422


# --- checkout -------------------------------------------------------------------------------------


@router.get("/checkout")
async def checkout_form(request: Request, web: WebDep) -> Response:
    if not web.session(request).logged_in:
        return web.to_login(request, "Log in or register to check out.")
    cart = web.cart(request)
    if not cart:
        web.session(request).flash("info", "Your cart is empty.")
        return web.redirect(request, "/")
    return await _render_checkout(request, web, cart, key=new_checkout_key(), values={}, problem=None, status=200)


async def _render_checkout(request, web, lines: dict[str, int], *, key: str, values: dict, problem: str | None,
                           status: int, errors: dict | None = None) -> Response:
    shown, catalog_problem = await _cart_lines(web, lines)
    total = sum(line["product"]["price_cents"] * line["quantity"] for line in shown if line["product"])
    return web.render(request, "checkout.html", status=status, lines=shown, total=total, key=key,
                      snapshot=web.carts.dumps(lines), values=values, errors=errors or {},
                      problem=problem or catalog_problem, test_cards=TEST_CARDS, this_year=date.today().year)


@router.post("/checkout")
async def checkout(request: Request, web: WebDep, form: PostForm) -> Response:
    session = web.session(request)
    if not session.logged_in:
        return web.to_login(request, "Log in to check out.")
    # What the form showed, not the cart as it is now: a resubmitted form orders what it showed,
    # with its key, so orders answers with the order it already has.
    lines = read_cart(web.carts.loads(form.get("snapshot"), web.settings.cart_max_age_seconds))
    key = form.get("idempotency_key", "")
    if not lines or not key.startswith("sf-") or len(key) > 100:
        session.flash("error", "That checkout form was not valid any more; here is a fresh one.")
        return web.redirect(request, "/checkout")
    values = {"card_number": form.get("card_number", "").strip(), "expiry": form.get("expiry", "").strip()}
    card, errors = _card(form)
    if errors:
        return await _render_checkout(request, web, lines, key=key, values=values, errors=errors, status=422,
                                      problem="Please correct the card details marked below.")
    try:
        order = await web.shop.place_order(session.token, key, lines, card)
    except SessionExpired:
        session.log_out()
        return web.to_login(request, "Your session has ended. Please log in again to check out.")
    except KeyReused as error:  # the same attempt with another card: a new attempt, shown for review
        return await _render_checkout(request, web, lines, key=new_checkout_key(), values=values, status=409,
                                      problem=str(error))
    except ShopError as error:
        # Same key on purpose: if the first try did reach orders, the next one gets that order.
        return await _render_checkout(request, web, lines, key=key, values=values, errors=error.fields,
                                      status=_status(error), problem=str(error))
    cart = web.cart(request)
    if cart == lines:
        cart = {}
    return web.redirect(request, f"/orders/{order['id']}", cart=cart)


def _card(form: dict[str, str]) -> tuple[dict, dict[str, str]]:
    """The card as orders takes it, and what is wrong with the form's fields (field -> message)."""
    errors = {}
    number = re.sub(r"[\s-]", "", form.get("card_number", ""))
    if not number.isdigit() or not 12 <= len(number) <= 19:
        errors["card_number"] = "Enter the 12 to 19 digits of the card number."
    month = year = 0
    match = re.fullmatch(r"\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*", form.get("expiry", ""))
    if match:
        month, year = int(match.group(1)), int(match.group(2))
        year += 2000 if year < 100 else 0
    if not match or not 1 <= month <= 12:
        errors["expiry"] = "Enter the expiry date as MM/YY, like 12/30."
    cvc = form.get("cvc", "").strip()
    if not re.fullmatch(r"\d{3,4}", cvc):
        errors["cvc"] = "Enter the 3 or 4 digits on the back of the card."
    return {"card_number": number, "expiry_month": month, "expiry_year": year, "cvc": cvc}, errors


# --- orders ---------------------------------------------------------------------------------------


@router.get("/orders")
async def order_history(request: Request, web: WebDep) -> Response:
    session = web.session(request)
    if not session.logged_in:
        return web.to_login(request, "Log in to see your orders.")
    try:
        orders, total = await web.shop.orders(session.token)
    except SessionExpired:
        session.log_out()
        return web.to_login(request, "Your session has ended. Please log in again.")
    except ShopError as error:
        return web.render(request, "orders.html", status=503, orders=[], total=0, problem=str(error))
    orders.sort(key=lambda order: order["created_at"], reverse=True)
    return web.render(request, "orders.html", orders=orders, total=total, problem=None)


async def _order_view(web, token: str, order_id: str) -> dict:
    """The order, and its payment once it has one (the refund of a cancelled order shows there)."""
    order = await web.shop.order(token, order_id)
    payment = None
    if order["status"] in ("CANCELLED", "CONFIRMED") or order.get("payment_id"):
        try:
            payment = await web.shop.payment(token, order_id)
        except Unavailable:
            payment = None  # the order page shows without it
    return {"order": order, "payment": payment}


@router.get("/orders/{order_id}")
async def order_page(order_id: str, request: Request, web: WebDep, until: str = "") -> Response:
    session = web.session(request)
    if not session.logged_in:
        return web.to_login(request, "Log in to see this order.")
    try:
        view = await _order_view(web, session.token, order_id)
    except NotFound:
        return web.error_page(request, 404, "No such order", "There is no such order in your account.")
    except SessionExpired:
        session.log_out()
        return web.to_login(request, "Your session has ended. Please log in again.")
    except ShopError as error:
        return web.render(request, "order.html", status=503, order=None, problem=str(error), until="")
    return web.render(request, "order.html", problem=None, until=_until(until), **view)


@router.get("/orders/{order_id}/status")
async def order_status(order_id: str, request: Request, web: WebDep, until: str = "") -> Response:
    """The order's status block alone: what the order page polls while the saga runs. Its
    ``data-final`` says when to stop."""
    session = web.session(request)
    if not session.logged_in:
        return Response(status_code=401)
    try:
        view = await _order_view(web, session.token, order_id)
    except NotFound:
        return Response(status_code=404)
    except ShopError as error:  # the page keeps polling and says why it has nothing new
        return web.render(request, "order_status.html", status=200, fragment=True, order=None, problem=str(error),
                          until=_until(until))
    return web.render(request, "order_status.html", fragment=True, problem=None, until=_until(until), **view)


def _until(value: str) -> str:
    return value if value in ("CANCELLED",) else ""


@router.post("/orders/{order_id}/cancel")
async def cancel(order_id: str, request: Request, web: WebDep, form: PostForm) -> Response:
    session = web.session(request)
    if not session.logged_in:
        return web.to_login(request, "Log in to cancel an order.")
    try:
        order = await web.shop.cancel(session.token, order_id)
    except SessionExpired:
        session.log_out()
        return web.to_login(request, "Your session has ended. Please log in again.")
    except ShopError as error:
        session.flash("error", str(error))
        return web.redirect(request, f"/orders/{order_id}")
    if order["status"] == "CANCELLED":
        session.flash("ok", "Your order is cancelled and refunded.")
        return web.redirect(request, f"/orders/{order_id}")
    session.flash("info", "Cancellation under way: the refund appears here in a moment.")
    return web.redirect(request, f"/orders/{order_id}?until=CANCELLED")


# --- notifications --------------------------------------------------------------------------------


@router.get("/notifications")
async def notifications(request: Request, web: WebDep) -> Response:
    session = web.session(request)
    if not session.logged_in:
        return web.to_login(request, "Log in to see your notifications.")
    try:
        items = await web.shop.notifications(session.token)
    except SessionExpired:
        session.log_out()
        return web.to_login(request, "Your session has ended. Please log in again.")
    except ShopError as error:
        return web.render(request, "notifications.html", status=503, items=[], problem=str(error))
    return web.render(request, "notifications.html", items=items, problem=None)


