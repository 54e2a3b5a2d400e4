"""The storefront's one adapter: the gateway's public API (``/api/<service>/...``), called with the
customer's own token through the chassis clients (deadline, trace context, retries of safe calls,
circuit breaker, bulkhead). One client per service behind the gateway, so that orders being down
opens the breaker of the ordering calls only, never the catalog's.

Every failure comes back as a ``ShopError`` whose message is for the customer: an upstream
problem+json body is mapped to a friendly sentence (``FRIENDLY``), a technical failure to "... is
unavailable right now, try again". Nothing upstream (a stack trace, an internal address) reaches
a page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from microshop_chassis.downstream import DownstreamError
from microshop_chassis.errors import PROBLEM_BASE
from microshop_chassis.http_client import ServiceClient

# The services behind the gateway that the storefront calls, and how a customer names each.
LABELS = {
    "users": "Signing in",
    "inventory": "The catalog",
    "orders": "Ordering",
    "payments": "Payments",
    "notifications": "Notifications",
    "reports": "The sales report",
}
UNAVAILABLE = "{label} is unavailable right now. Please try again in a moment."


class ShopError(Exception):
    """The shop could not do it; ``str(error)`` is what the customer reads."""

    def __init__(self, message: str, *, status: int = 0, slug: str = "", fields: Mapping[str, str] | None = None,
                 body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.slug = slug
        self.fields = dict(fields or {})  # form field -> what is wrong with it
        self.body = body if isinstance(body, dict) else {}


class Unavailable(ShopError):
    """That part of the shop cannot answer now (down, timed out, breaker open): try again later."""


class NotFound(ShopError):
    pass


class SessionExpired(ShopError):
    """The customer's token is no longer accepted: log in again."""


class Forbidden(ShopError):
    pass


class KeyReused(ShopError):
    """The checkout's Idempotency-Key was used with another body (the cart or card changed)."""


@dataclass(frozen=True)
class Friendly:
    kind: type[ShopError]
    message: str  # str.format'ed with the problem's members and ``label``


FRIENDLY: dict[str, Friendly] = {
    "upstream-unavailable": Friendly(Unavailable, UNAVAILABLE),
    "upstream-timeout": Friendly(Unavailable, "{label} did not answer in time. Please try again in a moment."),
    "upstream-bad-response": Friendly(Unavailable, UNAVAILABLE),
    "overloaded": Friendly(Unavailable, "The shop is very busy right now. Please try again in a moment."),
    "not-ready": Friendly(Unavailable, UNAVAILABLE),
    "auth-unavailable": Friendly(Unavailable, "Signing in is unavailable right now. Please try again in a moment."),
    "checkout-unavailable": Friendly(Unavailable, "Checkout is unavailable right now: nothing was ordered and "
                                                  "nothing was charged. Please try again in a moment."),
    "invalid-credentials": Friendly(ShopError, "That e-mail address and password do not match an account."),
    "rate-limited": Friendly(ShopError, "Too many attempts. Please wait a minute, then try again."),
    "unknown-sku": Friendly(ShopError, "Some products in your cart are no longer sold ({skus}): remove them "
                                       "from the cart, then check out again."),
    "invalid-card": Friendly(ShopError, "The card was not accepted: check its number, expiry date and CVC."),
    "too-many-payment-attempts": Friendly(ShopError, "Too many payment attempts with different cards. Please "
                                                     "try again in {retry_after_seconds} seconds."),
    "unchargeable-order": Friendly(ShopError, "This order cannot be paid for in one payment: lower the "
                                              "quantities and try again."),
    "mixed-currency": Friendly(ShopError, "These products cannot be bought together (different currencies)."),
    "idempotency-key-reused": Friendly(KeyReused, "Your cart or card changed since this checkout began. "
                                                  "Please check the order below and place it again."),
    "order-not-found": Friendly(NotFound, "There is no such order."),
    "product-not-found": Friendly(NotFound, "There is no such product."),
    "payment-not-found": Friendly(NotFound, "There is no payment for this order."),
    "not-found": Friendly(NotFound, "Not found."),
    "order-not-cancellable": Friendly(ShopError, "Only a confirmed order can be cancelled (this one is "
                                                 "{order_status})."),
    "stock-below-reserved": Friendly(ShopError, "On hand cannot go below the units that orders in progress "
                                                "hold ({detail})."),
    "unauthorized": Friendly(SessionExpired, "Your session has ended. Please log in again."),
    "forbidden": Friendly(Forbidden, "This page is for the shop's staff."),
    "rebuild-in-progress": Friendly(Unavailable, "The sales report is being rebuilt. Please try again shortly."),
    "broker-unavailable": Friendly(Unavailable, UNAVAILABLE),
}

# Where a validation error's location names a form field: (the API's name) -> the form's.
FIELD_NAMES = {"card_number": "card_number", "expiry_month": "expiry", "expiry_year": "expiry", "cvc": "cvc",
               "email": "email", "password": "password", "name": "name", "on_hand": "on_hand",
               "quantity": "quantity"}


def problem_error(service: str, status: int, body: Any) -> ShopError:
    """The ShopError for an answer that is not a success: its problem type's friendly message."""
    problem = body if isinstance(body, dict) else {}
    type_uri = problem.get("type") if isinstance(problem.get("type"), str) else ""
    slug = type_uri.removeprefix(PROBLEM_BASE) if type_uri.startswith(PROBLEM_BASE) else ""
    label = LABELS.get(service, "The shop")
    if slug == "weak-password":  # users' detail says what to change, in the customer's words
        return ShopError(str(problem.get("detail") or "Choose a stronger password."), status=status, slug=slug,
                         fields={"password": str(problem.get("detail") or "Too weak.")}, body=problem)
    if slug == "validation-error":
        fields = _field_errors(problem.get("errors"))
        return ShopError("Please correct the fields marked below.", status=status, slug=slug, fields=fields,
                         body=problem)
    friendly = FRIENDLY.get(slug)
    if friendly is not None:
        members = {key: _text(value) for key, value in problem.items()}
        return friendly.kind(_format(friendly.message, {**members, "label": label}), status=status, slug=slug,
                             body=problem)
    if status == 401:
        return SessionExpired(FRIENDLY["unauthorized"].message, status=status, slug=slug, body=problem)
    if status == 403:
        return Forbidden(FRIENDLY["forbidden"].message, status=status, slug=slug, body=problem)
    if status == 404:
        return NotFound("Not found.", status=status, slug=slug, body=problem)
    if status >= 500 or status == 429:
        return Unavailable(UNAVAILABLE.format(label=label), status=status, slug=slug, body=problem)
    return ShopError(f"{label} could not do that (error {status}).", status=status, slug=slug, body=problem)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def _format(template: str, members: dict[str, str]) -> str:
    try:
        return template.format_map(members)
    except (KeyError, IndexError, ValueError):  # a member the problem did not carry
        return template.split("(")[0].split("{")[0].strip().rstrip(":") + "."


def _field_errors(errors: Any) -> dict[str, str]:
    fields: dict[str, str] = {}
    for error in errors if isinstance(errors, list) else []:
        location = error.get("loc") if isinstance(error, dict) else None
        if not isinstance(location, list) or not location:
            continue
        name = FIELD_NAMES.get(str(location[-1]))
        if name and name not in fields:
            message = str(error.get("msg") or "Not valid.").removeprefix("Value error, ")
            fields[name] = message[:1].upper() + message[1:]
    return fields


class Shop:
    """The public API's calls the pages make, each with the caller's token (None: anonymous)."""

    def __init__(self, clients: Mapping[str, ServiceClient], *, checkout_timeout: float = 20.0) -> None:
        self.clients = clients
        self.checkout_timeout = checkout_timeout

    async def _call(self, service: str, method: str, path: str, *, token: str | None = None, json_body: Any = None,
                    params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                    idempotent: bool | None = None, timeout: float | None = None) -> tuple[int, Any]:
        extra = dict(headers or {})
        if token:
            extra["Authorization"] = f"Bearer {token}"
        try:
            reply = await self.clients[service].request(method, f"/api/{service}{path}", json_body=json_body,
                                                        params=params, headers=extra, idempotent=idempotent,
                                                        timeout=timeout)
        except DownstreamError as exc:  # unreachable, timed out, breaker open, bulkhead full
            raise Unavailable(UNAVAILABLE.format(label=LABELS.get(service, "The shop"))) from exc
        if not reply.ok:
            raise problem_error(service, reply.status, reply.body)
        return reply.status, reply.body

    # --- anyone ---------------------------------------------------------------------------------

    async def products(self) -> list[dict]:
        _, body = await self._call("inventory", "GET", "/products", params={"limit": "1000"})
        return body["items"]

    async def product(self, sku: str) -> dict:
        _, body = await self._call("inventory", "GET", f"/products/{quote(sku, safe='')}")
        return body

    async def register(self, email: str, password: str, name: str) -> None:
        await self._call("users", "POST", "/register", json_body={"email": email, "password": password, "name": name})

    async def login(self, email: str, password: str) -> dict:
        _, body = await self._call("users", "POST", "/login", json_body={"email": email, "password": password})
        return body

    # --- a customer -----------------------------------------------------------------------------

    async def me(self, token: str) -> dict:
        _, body = await self._call("users", "GET", "/me", token=token)
        return body

    async def place_order(self, token: str, key: str, lines: Mapping[str, int], card: Mapping[str, Any]) -> dict:
        """The order as orders answered (CONFIRMED/REJECTED, or PENDING while the saga runs). The
        same ``key`` with the same lines and card is the same order: a retry, a double click or a
        resubmitted form never orders twice."""
        body = {"items": [{"sku": sku, "quantity": quantity} for sku, quantity in lines.items()], "payment": card}
        _, order = await self._call("orders", "POST", "", token=token, json_body=body,
                                    headers={"Idempotency-Key": key}, idempotent=True,
                                    timeout=self.checkout_timeout)
        return order

    async def orders(self, token: str, *, limit: int = 100) -> tuple[list[dict], int]:
        _, body = await self._call("orders", "GET", "", token=token, params={"limit": str(limit)})
        return body["items"], body["total"]

    async def order(self, token: str, order_id: str) -> dict:
        _, body = await self._call("orders", "GET", f"/{quote(order_id, safe='')}", token=token)
        return body

    async def cancel(self, token: str, order_id: str) -> dict:
        # Not retried: a retry after a lost answer would be refused as "not cancellable" although
        # the first one worked. The order page shows the outcome either way.
        _, body = await self._call("orders", "POST", f"/{quote(order_id, safe='')}/cancel", token=token,
                                   timeout=self.checkout_timeout)
        return body

    async def payment(self, token: str, order_id: str) -> dict | None:
        try:
            _, body = await self._call("payments", "GET", f"/{quote(order_id, safe='')}", token=token)
        except NotFound:
            return None
        return body

    async def notifications(self, token: str) -> list[dict]:
        _, body = await self._call("notifications", "GET", "", token=token, params={"limit": "100"})
        return body["items"]

    # --- an admin -------------------------------------------------------------------------------

    async def stock(self, token: str) -> list[dict]:
        _, body = await self._call("inventory", "GET", "/stock", token=token, params={"limit": "1000"})
        return body["items"]

    async def set_stock(self, token: str, sku: str, on_hand: int) -> dict:
        _, body = await self._call("inventory", "PUT", f"/stock/{quote(sku, safe='')}", token=token,
                                   json_body={"on_hand": on_hand})
        return body

    async def payments(self, token: str) -> tuple[list[dict], int]:
        _, body = await self._call("payments", "GET", "", token=token, params={"limit": "1000"})
        return body["items"], body["total"]

    async def sales(self, token: str) -> dict:
        _, body = await self._call("reports", "GET", "/sales", token=token)
        return body
