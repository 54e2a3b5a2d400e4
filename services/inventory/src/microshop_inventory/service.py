"""inventory's use cases: plain async functions over the database; the HTTP layer only translates.

Stock moves only through conditional UPDATEs (``... WHERE on_hand - reserved >= :q``) and a
reservation changes state only through ``... WHERE status = :from``. So concurrent requests,
replicas and the expiry sweeper can never oversell nor move the same units twice, on SQLite or
PostgreSQL. Products are always updated in sku order, so two transactions never wait on each other
in a cycle. Every change is one transaction: one commit.

Each product also keeps two running totals, changed by the very UPDATE that changes ``on_hand``:
``received_units`` (what admins put in stock: each stock count adds new minus old on hand) and
``sold_units`` (a commit adds its lines, a restock takes them back). So ``on_hand ==
received_units - sold_units`` always (a CHECK constraint holds the database to it), and an
operator can check stock conservation against orders without a baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from microshop_chassis.db import Database
from microshop_chassis.errors import Problem
from microshop_chassis.pagination import Page
from microshop_chassis.tables import insert_ignoring_duplicates
from sqlalchemy import Integer, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .domain import (
    COMMIT,
    EXPIRE,
    RELEASE,
    RESTOCK,
    ReservationStatus,
    Transition,
    as_quantities,
    expiry,
    is_tombstone,
    same_items,
)
from .models import products, reservation_lines, reservations
from .schemas import ProductIn, ProductOut, ReservationLineSchema, ReservationOut, StockOut, StockSummaryOut

HELD = ReservationStatus.HELD


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- catalog and stock ------------------------------------------------------------------------


def _product_out(row) -> ProductOut:
    return ProductOut(sku=row.sku, name=row.name, description=row.description, price_cents=row.price_cents,
                      currency=row.currency, available=row.on_hand - row.reserved)


async def list_products(db: Database, *, skus: list[str] | None, limit: int, offset: int) -> Page[ProductOut]:
    where = [products.c.sku.in_(skus)] if skus else []
    async with db.session() as session:
        total = (await session.execute(select(func.count()).select_from(products).where(*where))).scalar_one()
        rows = await session.execute(
            select(products).where(*where).order_by(products.c.sku).limit(limit).offset(offset)
        )
        return Page(items=[_product_out(row) for row in rows], total=total)


async def get_product(db: Database, sku: str) -> ProductOut:
    async with db.session() as session:
        row = (await session.execute(select(products).where(products.c.sku == sku))).first()
    if row is None:
        raise Problem(404, f"No product with sku {sku}.", type="product-not-found", sku=sku)
    return _product_out(row)


async def put_product(db: Database, sku: str, body: ProductIn) -> tuple[ProductOut, bool]:
    """Create the product (with no stock) or update its catalog data (stock untouched).
    Returns the product and whether it was created."""
    fields = body.model_dump() | {"updated_at": utcnow()}
    async with db.transaction() as session:
        # Insert-or-nothing first, so two admins creating one sku at once both succeed.
        created = (
            await session.execute(
                insert_ignoring_duplicates(
                    session.bind.dialect.name, products,
                    {"sku": sku, "on_hand": 0, "reserved": 0, "received_units": 0, "sold_units": 0, **fields},
                )
            )
        ).rowcount == 1
        on_hand = reserved = 0
        if not created:
            on_hand, reserved = (
                await session.execute(
                    update(products).where(products.c.sku == sku).values(**fields)
                    .returning(products.c.on_hand, products.c.reserved)
                )
            ).one()
    return ProductOut(sku=sku, **body.model_dump(), available=on_hand - reserved), created


_STOCK_COLUMNS = (products.c.sku, products.c.on_hand, products.c.reserved, products.c.received_units,
                  products.c.sold_units)


def _stock_out(row) -> StockOut:
    return StockOut(sku=row.sku, on_hand=row.on_hand, reserved=row.reserved, available=row.on_hand - row.reserved,
                    received_units=row.received_units, sold_units=row.sold_units)


async def list_stock(db: Database, *, limit: int, offset: int) -> Page[StockOut]:
    async with db.session() as session:
        total = (await session.execute(select(func.count()).select_from(products))).scalar_one()
        rows = await session.execute(select(*_STOCK_COLUMNS).order_by(products.c.sku).limit(limit).offset(offset))
        return Page(items=[_stock_out(row) for row in rows], total=total)


async def stock_summary(db: Database) -> StockSummaryOut:
    """Totals over every sku and reservations counted by state, read in one statement (so one
    snapshot on PostgreSQL too): what an operator checks once the system is quiet."""
    per_status = {
        status.value: select(func.count()).select_from(reservations)
        .where(reservations.c.status == status).scalar_subquery().label(f"status_{status.value}")
        for status in ReservationStatus
    }
    totals = (
        select(
            func.count().label("skus"),
            func.coalesce(func.sum(products.c.on_hand), 0).label("on_hand"),
            func.coalesce(func.sum(products.c.reserved), 0).label("reserved"),
            func.coalesce(func.sum(products.c.received_units), 0).label("received_units"),
            func.coalesce(func.sum(products.c.sold_units), 0).label("sold_units"),
            func.min(products.c.on_hand - products.c.reserved).label("min_available"),
        )
        .select_from(products)
        .subquery()
    )
    async with db.session() as session:
        row = (await session.execute(select(totals, *per_status.values()))).one()
    return StockSummaryOut(
        skus=row.skus, on_hand=int(row.on_hand), reserved=int(row.reserved),
        received_units=int(row.received_units), sold_units=int(row.sold_units),
        reservations_by_status={status: int(getattr(row, f"status_{status}")) for status in per_status},
        min_available=None if row.min_available is None else int(row.min_available),
    )


async def set_stock(db: Database, sku: str, on_hand: int) -> StockOut:
    """Set the units on hand (a stock count, a delivery, a write-off). Never below what HELD
    reservations keep. The difference from the old on hand counts as received (negative for a
    write-off); SET expressions read the row as it was, in one statement, so a concurrent commit
    cannot slip between reading and writing."""
    async with db.transaction() as session:
        updated = (
            await session.execute(
                update(products)
                .where(products.c.sku == sku, products.c.reserved <= on_hand)
                .values(on_hand=on_hand,
                        received_units=products.c.received_units + (on_hand - products.c.on_hand),
                        updated_at=utcnow())
                .returning(*_STOCK_COLUMNS)
            )
        ).first()
        if updated is not None:
            return _stock_out(updated)
        current = (await session.execute(select(products.c.reserved).where(products.c.sku == sku))).first()
    if current is None:
        raise Problem(404, f"No product with sku {sku}.", type="product-not-found", sku=sku)
    raise Problem(
        409, f"{current.reserved} units of {sku} are reserved; on hand cannot be set to {on_hand}.",
        type="stock-below-reserved", sku=sku, reserved=current.reserved,
    )


# --- reservations -----------------------------------------------------------------------------


def _reservation_out(order_id: str, status: str, quantities: Mapping[str, int],
                     expires_at: datetime | None) -> ReservationOut:
    return ReservationOut(
        order_id=order_id,
        status=ReservationStatus(status),
        items=[ReservationLineSchema(sku=sku, quantity=q) for sku, q in sorted(quantities.items())],
        expires_at=expires_at,
    )


async def _quantities(session: AsyncSession, order_id: str) -> dict[str, int]:
    rows = await session.execute(
        select(reservation_lines.c.sku, reservation_lines.c.quantity).where(reservation_lines.c.order_id == order_id)
    )
    return as_quantities((sku, quantity) for sku, quantity in rows)


async def _move_units(session: AsyncSession, quantities: Mapping[str, int], step: Transition, now: datetime) -> None:
    """Apply ``step``'s effect on stock to every line, in sku order (see the module docstring)."""
    if not quantities:
        return
    statement = (
        update(products)
        .where(products.c.sku == bindparam("line_sku"))
        .values(
            on_hand=products.c.on_hand + bindparam("on_hand_delta", type_=Integer),
            reserved=products.c.reserved + bindparam("reserved_delta", type_=Integer),
            sold_units=products.c.sold_units + bindparam("sold_delta", type_=Integer),
            updated_at=now,
        )
    )
    await session.execute(
        statement,
        [
            {"line_sku": sku, "on_hand_delta": step.on_hand * q, "reserved_delta": step.reserved * q,
             "sold_delta": step.sold * q}
            for sku, q in sorted(quantities.items())
        ],
    )


async def find_reservation(db: Database, order_id: str) -> ReservationOut | None:
    async with db.session() as session:
        row = (
            await session.execute(
                select(reservations.c.status, reservations.c.expires_at).where(reservations.c.order_id == order_id)
            )
        ).first()
        if row is None:
            return None
        return _reservation_out(order_id, row.status, await _quantities(session, order_id), row.expires_at)


async def get_reservation(db: Database, order_id: str) -> ReservationOut:
    found = await find_reservation(db, order_id)
    if found is None:
        raise _not_found(order_id)
    return found


async def reserve(
    db: Database, order_id: str, quantities: Mapping[str, int], *, ttl_seconds: int
) -> tuple[ReservationOut, bool]:
    """Hold every line's units for the order, all or nothing. Idempotent by order id.
    Returns the reservation and whether it was created now."""
    try:
        return await _hold(db, order_id, quantities, ttl_seconds), True
    except IntegrityError:
        # The order id exists (perhaps a concurrent twin of this very request won): answer with it.
        existing = await find_reservation(db, order_id)
        if existing is None:
            raise  # not a duplicate order id: a constraint caught a bug, and it must surface
    existing_quantities = {line.sku: line.quantity for line in existing.items}
    if is_tombstone(existing.status, existing_quantities):
        raise Problem(409, f"Order {order_id} was released before it was reserved; nothing is held.",
                      type="reservation-closed", reservation_status=existing.status.value)
    if not same_items(existing_quantities, quantities):
        raise Problem(409, f"Order {order_id} is already reserved with other items.", type="reservation-mismatch",
                      reservation_status=existing.status.value)
    return existing, False


async def _hold(db: Database, order_id: str, quantities: Mapping[str, int], ttl_seconds: int) -> ReservationOut:
    now = utcnow()
    expires_at = expiry(now, ttl_seconds)
    async with db.transaction() as session:
        # First, so a second reserve for this order fails here (IntegrityError) before touching stock.
        await session.execute(
            insert(reservations).values(order_id=order_id, status=HELD, expires_at=expires_at,
                                        created_at=now, updated_at=now)
        )
        await session.execute(
            insert(reservation_lines),
            [{"order_id": order_id, "sku": sku, "quantity": q} for sku, q in quantities.items()],
        )
        short = []
        for sku, quantity in sorted(quantities.items()):
            held = await session.execute(
                update(products)
                .where(products.c.sku == sku, products.c.on_hand - products.c.reserved >= quantity)
                .values(reserved=products.c.reserved + quantity, updated_at=now)
            )
            if held.rowcount != 1:
                short.append(sku)
        if short:  # raising rolls everything back: nothing held, nothing recorded
            known = set((await session.execute(select(products.c.sku).where(products.c.sku.in_(short)))).scalars())
            unknown = [sku for sku in short if sku not in known]
            if unknown:
                raise Problem(422, f"No such product: {', '.join(unknown)}.", type="unknown-sku", skus=unknown)
            raise Problem(409, f"Not enough stock for: {', '.join(short)}.", type="out-of-stock", skus=short)
    return _reservation_out(order_id, HELD, quantities, expires_at)


async def commit(db: Database, order_id: str) -> ReservationOut:
    """HELD -> COMMITTED: the order is paid; its units are sold."""
    return await _step(db, order_id, COMMIT)


async def release(db: Database, order_id: str) -> ReservationOut:
    """HELD -> RELEASED: the order will not be paid; its units are available again. Releasing an
    unknown order records a tombstone, so a reserve that arrives late holds nothing."""
    return await _step(db, order_id, RELEASE, tombstone_when_unknown=True)


async def restock(db: Database, order_id: str) -> ReservationOut:
    """COMMITTED -> RESTOCKED: a cancelled order's units go back on hand."""
    return await _step(db, order_id, RESTOCK)


async def _step(
    db: Database, order_id: str, step: Transition, *, tombstone_when_unknown: bool = False
) -> ReservationOut:
    # PostgreSQL reads each statement afresh: a reserve committing between our UPDATE and our
    # SELECT shows up as "should have applied"; looking again resolves it.
    for _ in range(3):
        async with db.transaction() as session:
            answer = await _try_step(session, order_id, step, tombstone_when_unknown)
        if answer is not None:
            return answer
    raise Problem(503, f"The reservation for order {order_id} kept changing; try again.", type="reservation-busy")


async def _try_step(session: AsyncSession, order_id: str, step: Transition,
                    tombstone_when_unknown: bool) -> ReservationOut | None:
    now = utcnow()
    moved = (
        await session.execute(
            update(reservations)
            .where(reservations.c.order_id == order_id, reservations.c.status == step.source)
            .values(status=step.target, updated_at=now)
            .returning(reservations.c.expires_at)
        )
    ).first()
    if moved is not None:
        quantities = await _quantities(session, order_id)
        await _move_units(session, quantities, step, now)
        return _reservation_out(order_id, step.target, quantities, moved.expires_at)

    found = (
        await session.execute(
            select(reservations.c.status, reservations.c.expires_at).where(reservations.c.order_id == order_id)
        )
    ).first()
    if found is None:
        if not tombstone_when_unknown:
            raise _not_found(order_id)
        tombstone = {"order_id": order_id, "status": ReservationStatus.RELEASED, "expires_at": None,
                     "created_at": now, "updated_at": now}
        inserted = await session.execute(insert_ignoring_duplicates(session.bind.dialect.name, reservations, tombstone))
        return _reservation_out(order_id, ReservationStatus.RELEASED, {}, None) if inserted.rowcount == 1 else None

    status = ReservationStatus(found.status)
    outcome = step.outcome_for(status)
    if outcome == "conflict":
        raise Problem(409, f"The reservation for order {order_id} is {status}; it cannot {step.name}.",
                      type=step.conflict, reservation_status=status.value)
    if outcome == "apply":
        return None
    return _reservation_out(order_id, status, await _quantities(session, order_id), found.expires_at)


def _not_found(order_id: str) -> Problem:
    return Problem(404, f"No reservation for order {order_id}.", type="reservation-not-found", order_id=order_id)


async def list_reservations(
    db: Database, *, status: ReservationStatus | None, limit: int, offset: int
) -> Page[ReservationOut]:
    where = [reservations.c.status == status] if status else []
    async with db.session() as session:
        total = (await session.execute(select(func.count()).select_from(reservations).where(*where))).scalar_one()
        rows = (
            await session.execute(
                select(reservations.c.order_id, reservations.c.status, reservations.c.expires_at)
                .where(*where)
                .order_by(reservations.c.created_at, reservations.c.order_id)
                .limit(limit)
                .offset(offset)
            )
        ).all()
        lines: dict[str, dict[str, int]] = {row.order_id: {} for row in rows}
        if rows:
            found = await session.execute(
                select(reservation_lines.c.order_id, reservation_lines.c.sku, reservation_lines.c.quantity)
                .where(reservation_lines.c.order_id.in_(lines))
            )
            for line in found:
                lines[line.order_id][line.sku] = line.quantity
    items = [_reservation_out(row.order_id, row.status, lines[row.order_id], row.expires_at) for row in rows]
    return Page(items=items, total=total)


# --- expiry -----------------------------------------------------------------------------------


async def expire_overdue(db: Database, *, now: datetime | None = None, batch_size: int = 500) -> int:
    """Turn HELD reservations past their expiry into EXPIRED and give their units back.
    Returns how many expired. Safe to run from several replicas at once."""
    now = now or utcnow()
    expired_count = 0
    while True:
        async with db.transaction() as session:
            overdue = (
                select(reservations.c.order_id)
                .where(reservations.c.status == HELD, reservations.c.expires_at <= now)
                .order_by(reservations.c.expires_at)
                .limit(batch_size)
            )
            # status = HELD again here: a commit or release that won the race keeps its reservation.
            expired = (
                await session.execute(
                    update(reservations)
                    .where(reservations.c.order_id.in_(overdue), reservations.c.status == HELD)
                    .values(status=ReservationStatus.EXPIRED, updated_at=now)
                    .returning(reservations.c.order_id)
                )
            ).scalars().all()
            if expired:
                totals = await session.execute(
                    select(reservation_lines.c.sku, func.sum(reservation_lines.c.quantity))
                    .where(reservation_lines.c.order_id.in_(expired))
                    .group_by(reservation_lines.c.sku)
                )
                await _move_units(session, {sku: int(q) for sku, q in totals}, EXPIRE, now)
        expired_count += len(expired)
        if len(expired) < batch_size:
            return expired_count
