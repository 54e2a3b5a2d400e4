"""orders' HTTP API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from microshop_chassis.auth import AdminUser, CurrentUser
from microshop_chassis.errors import Problem
from microshop_chassis.pagination import Page, Paging

from .domain import OrderStatus
from .models import Order
from .schemas import LineOut, OrderCreate, OrderOut, SagaOut
from .service import Orders, is_final

router = APIRouter(tags=["orders"])


def _orders(request: Request) -> Orders:
    return request.app.state.orders


def to_out(order: Order) -> OrderOut:
    return OrderOut(
        id=order.id, status=order.status, reason=order.reason if order.status != OrderStatus.CONFIRMED else None,
        total_cents=order.total_cents, currency=order.currency,
        items=[LineOut(sku=line.sku, quantity=line.quantity, unit_price_cents=line.unit_price_cents)
               for line in order.lines],
        customer_id=order.customer_id, payment_id=order.payment_id, card_last4=order.card_last4,
        created_at=order.created_at, updated_at=order.updated_at,
    )


@router.post(
    "/orders",
    response_model=OrderOut,
    status_code=201,
    summary="Place an order (checkout)",
    responses={
        201: {"description": "The order reached its outcome: CONFIRMED or REJECTED (see `reason`)."},
        202: {"description": "Accepted; the order is still PENDING and completes in the background."},
        400: {"description": "Idempotency-Key header missing."},
        422: {"description": "Invalid body, unknown product, invalid card, or key reused for another body."},
        503: {"description": "Inventory or payments unreachable before the order was created; nothing was ordered."},
    },
)
async def place_order(
    body: OrderCreate,
    customer: CurrentUser,
    request: Request,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> OrderOut:
    """Creates the order PENDING, then runs the checkout saga: reserve stock, charge the card, commit
    stock, confirm. The same `Idempotency-Key` with the same body returns the same order and charges once."""
    if not idempotency_key:
        raise Problem(400, "Send an Idempotency-Key header (e.g. a UUID) so a retry cannot order twice.",
                      type="idempotency-key-required")
    order, replayed = await _orders(request).place(customer, idempotency_key, body)
    response.status_code = 201 if is_final(order) else 202
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/orders/{order.id}"
    return to_out(order)


@router.get("/orders", response_model=Page[OrderOut], summary="Your orders (an admin sees all)")
async def list_orders(
    viewer: CurrentUser, paging: Paging, request: Request,
    status: Annotated[OrderStatus | None, Query()] = None,
) -> Page[OrderOut]:
    orders, total = await _orders(request).list(
        viewer, status=status.value if status else None, limit=paging.limit, offset=paging.offset
    )
    return Page(items=[to_out(order) for order in orders], total=total)


@router.get("/orders/{order_id}", response_model=OrderOut, summary="One order (its owner or an admin)")
async def get_order(order_id: str, viewer: CurrentUser, request: Request) -> OrderOut:
    return to_out(await _orders(request).get(viewer, order_id))


@router.post(
    "/orders/{order_id}/cancel",
    response_model=OrderOut,
    summary="Cancel a CONFIRMED order: refund and restock",
    responses={202: {"description": "Cancellation under way."}, 409: {"description": "Not CONFIRMED."}},
)
async def cancel_order(order_id: str, viewer: CurrentUser, request: Request, response: Response) -> OrderOut:
    order = await _orders(request).cancel(viewer, order_id)
    response.status_code = 200 if is_final(order) else 202
    return to_out(order)


@router.get("/orders/{order_id}/saga", response_model=SagaOut, summary="The order's saga state (admin)")
async def saga_state(order_id: str, _: AdminUser, request: Request) -> SagaOut:
    order = await _orders(request).saga_state(order_id)
    return SagaOut(order_id=order.id, status=order.status, step=order.saga_step, attempts=order.saga_attempts,
                   last_error=order.saga_last_error, lease_until=order.saga_lease_until)
