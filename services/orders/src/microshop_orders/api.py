"""orders' HTTP API: routes translate HTTP to the use cases of service.py and back; the domain's
errors become problem+json here, once (``ERRORS``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from microshop_chassis.auth import AdminUser, CurrentUser
from microshop_chassis.contracts import INVALID_CARD, UNKNOWN_SKU
from microshop_chassis.errors import VALIDATION_ERROR, ProblemMap, ProblemType, problem_responses
from microshop_chassis.pagination import Page, Paging
from microshop_chassis.provide import Provide
from microshop_chassis.telemetry import annotate_order

from .domain import (
    Card,
    Checkout,
    CheckoutUnavailable,
    IdempotencyKeyReused,
    InvalidCard,
    MixedCurrency,
    OrderNotCancellable,
    OrderNotFound,
    OrderStatus,
    PaymentAttemptsLimited,
    Step,
    UnchargeableOrder,
    UnknownProducts,
    is_final,
)
from .models import Order
from .schemas import LineOut, OrderCreate, OrderOut, SagaOut
from .service import Orders

IDEMPOTENCY_KEY_REQUIRED = ProblemType("idempotency-key-required", 400, "Idempotency-Key required")
IDEMPOTENCY_KEY_REUSED = ProblemType("idempotency-key-reused", 422, "Idempotency-Key reused")
MIXED_CURRENCY = ProblemType("mixed-currency", 422, "Mixed currencies")
CHECKOUT_UNAVAILABLE = ProblemType("checkout-unavailable", 503, "Checkout unavailable", headers={"Retry-After": "2"})
ORDER_NOT_FOUND = ProblemType("order-not-found", 404, "No such order")
ORDER_NOT_CANCELLABLE = ProblemType("order-not-cancellable", 409, "Order not cancellable")
UNCHARGEABLE_ORDER = ProblemType("unchargeable-order", 422, "Order cannot be paid for")
# The customer's card attempts are limited for now (card testing); Retry-After says until when.
PAYMENT_ATTEMPTS_LIMITED = ProblemType("too-many-payment-attempts", 429, "Too many payment attempts")

ERRORS: ProblemMap = {
    UnknownProducts: UNKNOWN_SKU,
    InvalidCard: INVALID_CARD,
    MixedCurrency: MIXED_CURRENCY,
    IdempotencyKeyReused: IDEMPOTENCY_KEY_REUSED,
    CheckoutUnavailable: CHECKOUT_UNAVAILABLE,
    OrderNotFound: ORDER_NOT_FOUND,
    OrderNotCancellable: ORDER_NOT_CANCELLABLE,
    UnchargeableOrder: UNCHARGEABLE_ORDER,
}

router = APIRouter(tags=["orders"])
OrdersDep = Annotated[Orders, Provide(Orders)]


def to_out(order: Order) -> OrderOut:
    return OrderOut(
        id=order.id, status=order.status, reason=order.reason if order.status != OrderStatus.CONFIRMED else None,
        total_cents=order.total_cents, currency=order.currency,
        items=[LineOut(sku=line.sku, quantity=line.quantity, unit_price_cents=line.unit_price_cents)
               for line in order.lines],
        customer_id=order.customer_id, payment_id=order.payment_id, card_last4=order.card_last4,
        created_at=order.created_at, updated_at=order.updated_at,
    )


def _final(order: Order) -> bool:
    return is_final(OrderStatus(order.status), Step(order.saga_step))


@router.post(
    "/orders",
    response_model=OrderOut,
    status_code=201,
    summary="Place an order (checkout)",
    responses={
        201: {"description": "The order reached its outcome: CONFIRMED or REJECTED (see `reason`)."},
        202: {"description": "Accepted; the order is still PENDING and completes in the background (or "
                             "NEEDS_ATTENTION: its saga stopped on a state only staff can resolve)."},
        **problem_responses(
            (IDEMPOTENCY_KEY_REQUIRED, "the Idempotency-Key header is missing"),
            (VALIDATION_ERROR, "the body is not valid"),
            (UNKNOWN_SKU, "a product is not in the catalog (with skus)"),
            (INVALID_CARD, "the card processor refused the card (with code)"),
            (MIXED_CURRENCY, "the products do not share one currency"),
            (IDEMPOTENCY_KEY_REUSED, "the key was used for another body"),
            (UNCHARGEABLE_ORDER, "the total is 0 or above the largest payment accepted, or its currency "
                                 "cannot be charged; nothing was ordered"),
            (PAYMENT_ATTEMPTS_LIMITED, "too many different cards tried or declined lately (with Retry-After "
                                       "and retry_after_seconds); nothing was ordered"),
            (CHECKOUT_UNAVAILABLE, "inventory or payments unreachable before the order was created; "
                                   "nothing was ordered"),
        ),
    },
)
async def place_order(
    body: OrderCreate,
    customer: CurrentUser,
    orders: OrdersDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> OrderOut:
    """Creates the order PENDING, then runs the checkout saga: reserve stock, charge the card, commit
    stock, confirm. The same `Idempotency-Key` with the same body returns the same order and charges once."""
    if not idempotency_key:
        raise IDEMPOTENCY_KEY_REQUIRED("Send an Idempotency-Key header (e.g. a UUID) so a retry cannot order twice.")
    card = Card(number=body.payment.card_number, expiry_month=body.payment.expiry_month,
                expiry_year=body.payment.expiry_year, cvc=body.payment.cvc)
    checkout = Checkout(lines=tuple((line.sku, line.quantity) for line in body.items), card=card)
    try:
        order, replayed = await orders.place(customer, idempotency_key, checkout)
    except PaymentAttemptsLimited as limited:
        wait = limited.retry_after_seconds
        raise PAYMENT_ATTEMPTS_LIMITED(str(limited), headers={"Retry-After": str(wait)},
                                       retry_after_seconds=wait) from limited
    annotate_order(order.id)
    response.status_code = 201 if _final(order) else 202
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/orders/{order.id}"
    return to_out(order)


@router.get("/orders", response_model=Page[OrderOut], summary="Your orders (an admin sees all)")
async def list_orders(
    viewer: CurrentUser, paging: Paging, orders: OrdersDep,
    status: Annotated[OrderStatus | None, Query()] = None,
) -> Page[OrderOut]:
    found, total = await orders.list(viewer, status=status, limit=paging.limit, offset=paging.offset)
    return Page(items=[to_out(order) for order in found], total=total)


@router.get("/orders/{order_id}", response_model=OrderOut, summary="One order (its owner or an admin)",
            responses=problem_responses((ORDER_NOT_FOUND, "no such order, or not yours")))
async def get_order(order_id: str, viewer: CurrentUser, orders: OrdersDep) -> OrderOut:
    return to_out(await orders.get(viewer, order_id))


@router.post(
    "/orders/{order_id}/cancel",
    response_model=OrderOut,
    summary="Cancel a CONFIRMED order: refund and restock",
    responses={202: {"description": "Cancellation under way."},
               **problem_responses((ORDER_NOT_FOUND, "no such order, or not yours"),
                                   (ORDER_NOT_CANCELLABLE, "not CONFIRMED (with order_status)"))},
)
async def cancel_order(order_id: str, viewer: CurrentUser, orders: OrdersDep, response: Response) -> OrderOut:
    order = await orders.cancel(viewer, order_id)
    response.status_code = 200 if _final(order) else 202
    return to_out(order)


@router.get("/orders/{order_id}/saga", response_model=SagaOut, summary="The order's saga state (admin)",
            responses=problem_responses(ORDER_NOT_FOUND))
async def saga_state(order_id: str, _: AdminUser, orders: OrdersDep) -> SagaOut:
    order = await orders.saga_state(order_id)
    return SagaOut(order_id=order.id, status=order.status, step=order.saga_step, attempts=order.saga_attempts,
                   last_error=order.saga_last_error, lease_until=order.saga_lease_until)
