"""The staff's pages (admin role): products and stock (on hand can be edited), every order, the
payments, the sales report. Each calls the gateway with the admin's own token, so the services
decide what an admin may do; these pages only choose what to show."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .shop import Forbidden, SessionExpired, ShopError
from .web import PostForm, Web, WebDep

router = APIRouter(prefix="/admin", include_in_schema=False)


def _gate(request: Request, web: Web) -> Response | None:
    """A page for admins: log in first, or be told it is not for you (403)."""
    session = web.session(request)
    if not session.logged_in:
        return web.to_login(request, "Log in with the admin account to see the staff pages.")
    if not session.is_admin:
        return web.error_page(request, 403, "Staff only", "This page is for the shop's staff.")
    return None


def _refused(request: Request, web: Web, error: ShopError) -> Response | None:
    if isinstance(error, SessionExpired):
        web.session(request).log_out()
        return web.to_login(request, "Your session has ended. Please log in again.")
    if isinstance(error, Forbidden):
        return web.error_page(request, 403, "Staff only", str(error))
    return None


@router.get("")
async def admin_home(request: Request, web: WebDep) -> Response:
    return _gate(request, web) or web.redirect(request, "/admin/products")


@router.get("/products")
async def products(request: Request, web: WebDep) -> Response:
    if (refusal := _gate(request, web)) is not None:
        return refusal
    token = web.session(request).token
    try:
        catalog = {item["sku"]: item for item in await web.shop.products()}
        stock = await web.shop.stock(token)
    except ShopError as error:
        return _refused(request, web, error) or web.render(request, "admin/products.html", status=503, rows=[],
                                                            problem=str(error))
    rows = [{**entry, "product": catalog.get(entry["sku"])} for entry in sorted(stock, key=lambda e: e["sku"])]
    return web.render(request, "admin/products.html", rows=rows, problem=None)


@router.post("/stock/{sku}")
async def set_stock(sku: str, request: Request, web: WebDep, form: PostForm) -> Response:
    if (refusal := _gate(request, web)) is not None:
        return refusal
    session = web.session(request)
    text = form.get("on_hand", "").strip()
    if not text.isdigit() or int(text) > 1_000_000_000:
        session.flash("error", f"{sku}: on hand must be a whole number, 0 or more (not {text[:20]!r}).")
        return web.redirect(request, "/admin/products")
    try:
        entry = await web.shop.set_stock(session.token, sku, int(text))
    except ShopError as error:
        refusal = _refused(request, web, error)
        if refusal is not None:
            return refusal
        session.flash("error", f"{sku}: {error}")
        return web.redirect(request, "/admin/products")
    session.flash("ok", f"{sku}: {entry['on_hand']} on hand, {entry['available']} available.")
    return web.redirect(request, "/admin/products")


@router.get("/orders")
async def orders(request: Request, web: WebDep) -> Response:
    if (refusal := _gate(request, web)) is not None:
        return refusal
    try:
        items, total = await web.shop.orders(web.session(request).token, limit=1000)
    except ShopError as error:
        return _refused(request, web, error) or web.render(request, "admin/orders.html", status=503, orders=[],
                                                            total=0, problem=str(error))
    items.sort(key=lambda order: order["created_at"], reverse=True)
    return web.render(request, "admin/orders.html", orders=items[:200], total=total, problem=None)


@router.get("/payments")
async def payments(request: Request, web: WebDep) -> Response:
    if (refusal := _gate(request, web)) is not None:
        return refusal
    try:
        items, total = await web.shop.payments(web.session(request).token)
    except ShopError as error:
        return _refused(request, web, error) or web.render(request, "admin/payments.html", status=503,
                                                            payments=[], total=0, problem=str(error))
    items.sort(key=lambda payment: payment["created_at"], reverse=True)
    return web.render(request, "admin/payments.html", payments=items[:200], total=total, problem=None)


@router.get("/report")
async def report(request: Request, web: WebDep) -> Response:
    if (refusal := _gate(request, web)) is not None:
        return refusal
    try:
        sales = await web.shop.sales(web.session(request).token)
    except ShopError as error:
        return _refused(request, web, error) or web.render(request, "admin/report.html", status=503, sales=None,
                                                            problem=str(error))
    return web.render(request, "admin/report.html", sales=sales, problem=None)
