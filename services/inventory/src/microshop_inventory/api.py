"""inventory's HTTP API: public catalog reads, admin catalog and stock, reservations for orders.

Routes translate HTTP to the use cases of service.py and their answers to the schemas; the
domain's errors become problem+json here, once (``ERRORS``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from microshop_chassis.auth import AdminUser, InternalCaller
from microshop_chassis.contracts import (
    OUT_OF_STOCK,
    RESERVATION_CLOSED,
    RESERVATION_COMMITTED,
    RESERVATION_MISMATCH,
    RESERVATION_NOT_COMMITTED,
    UNKNOWN_SKU,
)
from microshop_chassis.errors import (
    FORBIDDEN,
    UNAUTHORIZED,
    VALIDATION_ERROR,
    ProblemMap,
    ProblemType,
    problem_responses,
)
from microshop_chassis.pagination import Page, Paging
from microshop_chassis.provide import Provide

from .domain import (
    ORDER_ID_PATTERN,
    SKU_PATTERN,
    OutOfStock,
    Product,
    ProductInfo,
    ProductNotFound,
    Reservation,
    ReservationBusy,
    ReservationClosed,
    ReservationCommitted,
    ReservationMismatch,
    ReservationNotCommitted,
    ReservationNotFound,
    ReservationStatus,
    StockBelowReserved,
    StockLevel,
    UnknownSkus,
)
from .schemas import (
    ProductIn,
    ProductOut,
    ReservationIn,
    ReservationLineSchema,
    ReservationOut,
    StockIn,
    StockOut,
    StockSummaryOut,
)
from .service import Catalog, Reservations

PRODUCT_NOT_FOUND = ProblemType("product-not-found", 404, "No such product")
STOCK_BELOW_RESERVED = ProblemType("stock-below-reserved", 409, "Stock below reserved")
RESERVATION_NOT_FOUND = ProblemType("reservation-not-found", 404, "No such reservation")
RESERVATION_BUSY = ProblemType("reservation-busy", 503, "Reservation busy")

ERRORS: ProblemMap = {
    ProductNotFound: PRODUCT_NOT_FOUND,
    StockBelowReserved: STOCK_BELOW_RESERVED,
    OutOfStock: OUT_OF_STOCK,
    UnknownSkus: UNKNOWN_SKU,
    ReservationNotFound: RESERVATION_NOT_FOUND,
    ReservationClosed: RESERVATION_CLOSED,
    ReservationMismatch: RESERVATION_MISMATCH,
    ReservationCommitted: RESERVATION_COMMITTED,
    ReservationNotCommitted: RESERVATION_NOT_COMMITTED,
    ReservationBusy: RESERVATION_BUSY,
}

router = APIRouter()
CatalogDep = Annotated[Catalog, Provide(Catalog)]
ReservationsDep = Annotated[Reservations, Provide(Reservations)]

SkuPath = Annotated[str, Path(pattern=SKU_PATTERN, max_length=64, description="Stock keeping unit.")]
OrderIdPath = Annotated[str, Path(pattern=ORDER_ID_PATTERN, max_length=64, description="The order's id.")]

AUTH = ((UNAUTHORIZED, "bearer token missing or not valid"), (FORBIDDEN, "the token's role may not do this"))
INVALID = (VALIDATION_ERROR, "invalid parameters or body")
BUSY = (RESERVATION_BUSY, "the reservation kept changing under the request: try again")


def product_out(product: Product) -> ProductOut:
    return ProductOut(**asdict(product))


def stock_out(level: StockLevel) -> StockOut:
    return StockOut(**asdict(level), available=level.available)


def reservation_out(reservation: Reservation) -> ReservationOut:
    return ReservationOut(
        order_id=reservation.order_id,
        status=reservation.status,
        items=[ReservationLineSchema(sku=sku, quantity=q) for sku, q in reservation.lines],
        expires_at=reservation.expires_at,
    )


# --- public catalog -------------------------------------------------------------------------------


@router.get("/products", tags=["catalog"], summary="The catalog, by sku", responses=problem_responses(INVALID))
async def list_products(
    catalog: CatalogDep,
    paging: Paging,
    sku: Annotated[list[str] | None, Query(description="Only these skus (repeat the parameter).")] = None,
) -> Page[ProductOut]:
    found, total = await catalog.list_products(skus=sku, limit=paging.limit, offset=paging.offset)
    return Page(items=[product_out(product) for product in found], total=total)


@router.get("/products/{sku}", tags=["catalog"], summary="One product",
            responses=problem_responses((PRODUCT_NOT_FOUND, "no such product (with sku)"), INVALID))
async def get_product(sku: SkuPath, catalog: CatalogDep) -> ProductOut:
    return product_out(await catalog.get_product(sku))


# --- admin: catalog and stock ---------------------------------------------------------------------


@router.put("/products/{sku}", tags=["catalog"], summary="Create (201) or update (200) a product (admin)",
            description="Creating starts with nothing on hand; updating leaves stock as it is.",
            responses={201: {"model": ProductOut, "description": "Created"}, **problem_responses(*AUTH, INVALID)})
async def put_product(sku: SkuPath, body: ProductIn, _: AdminUser, catalog: CatalogDep,
                      response: Response) -> ProductOut:
    product, created = await catalog.put_product(sku, ProductInfo(**body.model_dump()))
    if created:
        response.status_code = 201
    return product_out(product)


@router.get("/stock", tags=["stock"],
            summary="Units on hand, reserved, available, received and sold, by sku (admin)",
            description="on_hand = received_units - sold_units for every sku, always.",
            responses=problem_responses(*AUTH, INVALID))
async def list_stock(_: AdminUser, paging: Paging, catalog: CatalogDep) -> Page[StockOut]:
    levels, total = await catalog.list_stock(limit=paging.limit, offset=paging.offset)
    return Page(items=[stock_out(level) for level in levels], total=total)


# Declared before /stock/{sku}, so "summary" is never taken for a sku.
@router.get("/stock/summary", tags=["stock"], summary="Stock totals and reservations by state (admin)",
            description="One consistent read for operators: once the system is quiet, reserved is 0, no "
                        "reservation is HELD, and min_available is not negative.",
            responses=problem_responses(*AUTH))
async def stock_summary(_: AdminUser, catalog: CatalogDep) -> StockSummaryOut:
    return StockSummaryOut(**asdict(await catalog.stock_summary()))


@router.put("/stock/{sku}", tags=["stock"], summary="Set the units on hand (admin)",
            responses=problem_responses(
                (PRODUCT_NOT_FOUND, "no such product (with sku)"),
                (STOCK_BELOW_RESERVED, "fewer than the units reserved (with sku and reserved)"),
                *AUTH, INVALID,
            ))
async def set_stock(sku: SkuPath, body: StockIn, _: AdminUser, catalog: CatalogDep) -> StockOut:
    return stock_out(await catalog.set_stock(sku, body.on_hand))


# --- reservations (for orders) --------------------------------------------------------------------


@router.get("/reservations", tags=["reservations"], summary="Reservations, oldest first (admin)",
            responses=problem_responses(*AUTH, INVALID))
async def list_reservations(
    _: AdminUser,
    paging: Paging,
    reservations: ReservationsDep,
    status: Annotated[ReservationStatus | None, Query(description="Only reservations in this state.")] = None,
) -> Page[ReservationOut]:
    found, total = await reservations.list(status=status, limit=paging.limit, offset=paging.offset)
    return Page(items=[reservation_out(reservation) for reservation in found], total=total)


@router.put(
    "/reservations/{order_id}", tags=["reservations"],
    summary="Hold stock for an order, all lines or none (201 new, 200 repeat)",
    description="Idempotent by order id: repeating it with the same items answers 200 with the reservation "
                "as it is now, whatever its state.",
    responses={
        201: {"model": ReservationOut, "description": "Held now"},
        **problem_responses(
            (OUT_OF_STOCK, "not enough available for some lines (with skus), so nothing was held"),
            (RESERVATION_MISMATCH, "the order is already reserved with other items (with reservation_status)"),
            (RESERVATION_CLOSED, "the order was released before it was reserved, so nothing is held "
                                 "(with reservation_status)"),
            (UNKNOWN_SKU, "no such products (with skus), so nothing was held"),
            INVALID,
            *AUTH,
        ),
    },
)
async def reserve(
    order_id: OrderIdPath, body: ReservationIn, _: InternalCaller, reservations: ReservationsDep, response: Response
) -> ReservationOut:
    quantities = {line.sku: line.quantity for line in body.items}
    reservation, created = await reservations.reserve(order_id, quantities)
    if created:
        response.status_code = 201
    return reservation_out(reservation)


@router.get("/reservations/{order_id}", tags=["reservations"], summary="One order's reservation",
            responses=problem_responses((RESERVATION_NOT_FOUND, "no reservation for the order (with order_id)"),
                                        *AUTH, INVALID))
async def get_reservation(order_id: OrderIdPath, _: InternalCaller, reservations: ReservationsDep) -> ReservationOut:
    return reservation_out(await reservations.get(order_id))


@router.post("/reservations/{order_id}/commit", tags=["reservations"],
             summary="HELD -> COMMITTED: the units are sold (repeat: 200 unchanged)",
             responses=problem_responses(
                 (RESERVATION_NOT_FOUND, "no reservation for the order (with order_id)"),
                 (RESERVATION_CLOSED, "RELEASED or EXPIRED (with reservation_status)"),
                 *AUTH, INVALID, BUSY,
             ))
async def commit(order_id: OrderIdPath, _: InternalCaller, reservations: ReservationsDep) -> ReservationOut:
    return reservation_out(await reservations.commit(order_id))


@router.post("/reservations/{order_id}/release", tags=["reservations"],
             summary="HELD -> RELEASED: the units are available again (repeat or EXPIRED: 200 unchanged)",
             description="Releasing an unknown order records a RELEASED tombstone with no items, so a "
                         "reserve arriving later answers 409 reservation-closed.",
             responses=problem_responses(
                 (RESERVATION_COMMITTED, "COMMITTED or RESTOCKED (with reservation_status)"),
                 *AUTH, INVALID, BUSY,
             ))
async def release(order_id: OrderIdPath, _: InternalCaller, reservations: ReservationsDep) -> ReservationOut:
    return reservation_out(await reservations.release(order_id))


@router.post("/reservations/{order_id}/restock", tags=["reservations"],
             summary="COMMITTED -> RESTOCKED: a cancelled order's units go back on hand (repeat: 200)",
             responses=problem_responses(
                 (RESERVATION_NOT_FOUND, "no reservation for the order (with order_id)"),
                 (RESERVATION_NOT_COMMITTED, "not COMMITTED (with reservation_status)"),
                 *AUTH, INVALID, BUSY,
             ))
async def restock(order_id: OrderIdPath, _: InternalCaller, reservations: ReservationsDep) -> ReservationOut:
    return reservation_out(await reservations.restock(order_id))
