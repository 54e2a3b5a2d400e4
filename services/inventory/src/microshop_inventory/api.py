"""inventory's HTTP API: public catalog reads, admin catalog and stock, reservations for orders."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from microshop_chassis.auth import AdminUser, ServiceCaller
from microshop_chassis.db import Database
from microshop_chassis.pagination import Page, Paging

from . import service
from .domain import ORDER_ID_PATTERN, SKU_PATTERN, ReservationStatus
from .schemas import (
    ProblemDetails,
    ProductIn,
    ProductOut,
    ReservationIn,
    ReservationOut,
    StockIn,
    StockOut,
    StockSummaryOut,
)

router = APIRouter()

SkuPath = Annotated[str, Path(pattern=SKU_PATTERN, max_length=64, description="Stock keeping unit.")]
OrderIdPath = Annotated[str, Path(pattern=ORDER_ID_PATTERN, max_length=64, description="The order's id.")]


def _problem(description: str) -> dict[str, Any]:
    return {"model": ProblemDetails, "description": description}


AUTH = {401: _problem("Bearer token missing or not valid"), 403: _problem("The token's role may not do this")}
VALIDATION = {422: _problem("Invalid parameters or body (type validation-error)")}


def _db(request: Request) -> Database:
    return request.app.state.db


# --- public catalog ---------------------------------------------------------------------------


@router.get("/products", tags=["catalog"], summary="The catalog, by sku", responses=VALIDATION)
async def list_products(
    request: Request,
    paging: Paging,
    sku: Annotated[list[str] | None, Query(description="Only these skus (repeat the parameter).")] = None,
) -> Page[ProductOut]:
    return await service.list_products(_db(request), skus=sku, limit=paging.limit, offset=paging.offset)


@router.get("/products/{sku}", tags=["catalog"], summary="One product",
            responses={404: _problem("No such product (type product-not-found)"), **VALIDATION})
async def get_product(sku: SkuPath, request: Request) -> ProductOut:
    return await service.get_product(_db(request), sku)


# --- admin: catalog and stock -----------------------------------------------------------------


@router.put("/products/{sku}", tags=["catalog"], summary="Create (201) or update (200) a product (admin)",
            description="Creating starts with nothing on hand; updating leaves stock as it is.",
            responses={201: {"model": ProductOut, "description": "Created"}, **AUTH, **VALIDATION})
async def put_product(sku: SkuPath, body: ProductIn, _: AdminUser, request: Request, response: Response) -> ProductOut:
    product, created = await service.put_product(_db(request), sku, body)
    if created:
        response.status_code = 201
    return product


@router.get("/stock", tags=["stock"],
            summary="Units on hand, reserved, available, received and sold, by sku (admin)",
            description="on_hand = received_units - sold_units for every sku, always.",
            responses={**AUTH, **VALIDATION})
async def list_stock(_: AdminUser, paging: Paging, request: Request) -> Page[StockOut]:
    return await service.list_stock(_db(request), limit=paging.limit, offset=paging.offset)


# Declared before /stock/{sku}, so "summary" is never taken for a sku.
@router.get("/stock/summary", tags=["stock"], summary="Stock totals and reservations by state (admin)",
            description="One consistent read for operators: once the system is quiet, reserved is 0, no "
                        "reservation is HELD, and min_available is not negative.",
            responses={**AUTH})
async def stock_summary(_: AdminUser, request: Request) -> StockSummaryOut:
    return await service.stock_summary(_db(request))


@router.put("/stock/{sku}", tags=["stock"], summary="Set the units on hand (admin)",
            responses={404: _problem("No such product (type product-not-found)"),
                       409: _problem("Fewer than the units reserved (type stock-below-reserved)"),
                       **AUTH, **VALIDATION})
async def set_stock(sku: SkuPath, body: StockIn, _: AdminUser, request: Request) -> StockOut:
    return await service.set_stock(_db(request), sku, body.on_hand)


# --- reservations (for orders) ----------------------------------------------------------------


@router.get("/reservations", tags=["reservations"], summary="Reservations, oldest first (admin)",
            responses={**AUTH, **VALIDATION})
async def list_reservations(
    _: AdminUser,
    paging: Paging,
    request: Request,
    status: Annotated[ReservationStatus | None, Query(description="Only reservations in this state.")] = None,
) -> Page[ReservationOut]:
    return await service.list_reservations(_db(request), status=status, limit=paging.limit, offset=paging.offset)


@router.put(
    "/reservations/{order_id}", tags=["reservations"],
    summary="Hold stock for an order, all lines or none (201 new, 200 repeat)",
    description="Idempotent by order id: repeating it with the same items answers 200 with the reservation "
                "as it is now, whatever its state.",
    responses={
        201: {"model": ReservationOut, "description": "Held now"},
        409: _problem("out-of-stock (with skus), reservation-mismatch, or reservation-closed "
                      "(the order was released first)"),
        422: _problem("unknown-sku (with skus) or validation-error"),
        **AUTH,
    },
)
async def reserve(
    order_id: OrderIdPath, body: ReservationIn, _: ServiceCaller, request: Request, response: Response
) -> ReservationOut:
    quantities = {line.sku: line.quantity for line in body.items}
    ttl = request.app.state.settings.reservation_ttl_seconds
    reservation, created = await service.reserve(_db(request), order_id, quantities, ttl_seconds=ttl)
    if created:
        response.status_code = 201
    return reservation


@router.get("/reservations/{order_id}", tags=["reservations"], summary="One order's reservation",
            responses={404: _problem("type reservation-not-found"), **AUTH, **VALIDATION})
async def get_reservation(order_id: OrderIdPath, _: ServiceCaller, request: Request) -> ReservationOut:
    return await service.get_reservation(_db(request), order_id)


@router.post("/reservations/{order_id}/commit", tags=["reservations"],
             summary="HELD -> COMMITTED: the units are sold (repeat: 200 unchanged)",
             responses={404: _problem("type reservation-not-found"),
                        409: _problem("RELEASED or EXPIRED (type reservation-closed, with status)"),
                        **AUTH, **VALIDATION})
async def commit(order_id: OrderIdPath, _: ServiceCaller, request: Request) -> ReservationOut:
    return await service.commit(_db(request), order_id)


@router.post("/reservations/{order_id}/release", tags=["reservations"],
             summary="HELD -> RELEASED: the units are available again (repeat or EXPIRED: 200 unchanged)",
             description="Releasing an unknown order records a RELEASED tombstone with no items, so a "
                         "reserve arriving later answers 409 reservation-closed.",
             responses={409: _problem("COMMITTED or RESTOCKED (type reservation-committed, with status)"),
                        **AUTH, **VALIDATION})
async def release(order_id: OrderIdPath, _: ServiceCaller, request: Request) -> ReservationOut:
    return await service.release(_db(request), order_id)


@router.post("/reservations/{order_id}/restock", tags=["reservations"],
             summary="COMMITTED -> RESTOCKED: a cancelled order's units go back on hand (repeat: 200)",
             responses={404: _problem("type reservation-not-found"),
                        409: _problem("Not committed (type reservation-not-committed, with status)"),
                        **AUTH, **VALIDATION})
async def restock(order_id: OrderIdPath, _: ServiceCaller, request: Request) -> ReservationOut:
    return await service.restock(_db(request), order_id)
