"""inventory's use cases: ``Catalog`` (products and stock) and ``Reservations`` (stock held for
orders), each over the service's database. They answer with the plain data of domain.py and refuse
with its errors; api.py translates both to HTTP.

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
from dataclasses import asdict
from datetime import datetime

from microshop_chassis.db import Database, utcnow
from microshop_chassis.tables import insert_ignoring_duplicates
from sqlalchemy import Integer, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .domain import (
    COMMIT,
    EXPIRE,
    RELEASE,
    RESTOCK,
    OutOfStock,
    Product,
    ProductInfo,
    ProductNotFound,
    Reservation,
    ReservationBusy,
    ReservationClosed,
    ReservationMismatch,
    ReservationNotFound,
    ReservationStatus,
    StockBelowReserved,
    StockLevel,
    StockSummary,
    Transition,
    UnknownSkus,
    as_quantities,
    expiry,
    is_tombstone,
    same_items,
)
from .models import products, reservation_lines, reservations

HELD = ReservationStatus.HELD

_STOCK_COLUMNS = (products.c.sku, products.c.on_hand, products.c.reserved, products.c.received_units,
                  products.c.sold_units)

# Statements on a checkout's path are built once, their values given at execution: building one
# costs more than running it (docs/performance.md, "Prebuilt statements").
_PRODUCTS_BY_SKU = (
    select(products).where(products.c.sku.in_(bindparam("skus", expanding=True)))
    .order_by(products.c.sku).limit(bindparam("limit")).offset(bindparam("offset"))
)
_COUNT_PRODUCTS_BY_SKU = (
    select(func.count()).select_from(products).where(products.c.sku.in_(bindparam("skus", expanding=True)))
)
_KNOWN_SKUS = select(products.c.sku).where(products.c.sku.in_(bindparam("skus", expanding=True)))
_HOLD_UNITS = (
    update(products)
    .where(products.c.sku == bindparam("line_sku"),
           products.c.on_hand - products.c.reserved >= bindparam("quantity", type_=Integer))
    .values(reserved=products.c.reserved + bindparam("quantity", type_=Integer), updated_at=bindparam("now"))
)
_MOVE_UNITS = (
    update(products)
    .where(products.c.sku == bindparam("line_sku"))
    .values(on_hand=products.c.on_hand + bindparam("on_hand_delta", type_=Integer),
            reserved=products.c.reserved + bindparam("reserved_delta", type_=Integer),
            sold_units=products.c.sold_units + bindparam("sold_delta", type_=Integer),
            updated_at=bindparam("now"))
)
_INSERT_RESERVATION = insert(reservations)
_INSERT_LINES = insert(reservation_lines)
_RESERVATION_STATE = (
    select(reservations.c.status, reservations.c.expires_at).where(reservations.c.order_id == bindparam("order"))
)
_LINES_OF_ORDER = (
    select(reservation_lines.c.sku, reservation_lines.c.quantity)
    .where(reservation_lines.c.order_id == bindparam("order"))
)
_MOVE_RESERVATION = (  # one step of the reservation's state machine, only from the step's source state
    update(reservations)
    .where(reservations.c.order_id == bindparam("order"), reservations.c.status == bindparam("source"))
    .values(status=bindparam("target"), updated_at=bindparam("now"))
    .returning(reservations.c.expires_at)
)


def _product(row) -> Product:
    return Product(sku=row.sku, name=row.name, description=row.description, price_cents=row.price_cents,
                   currency=row.currency, available=row.on_hand - row.reserved)


def _stock_level(row) -> StockLevel:
    return StockLevel(sku=row.sku, on_hand=row.on_hand, reserved=row.reserved, received_units=row.received_units,
                      sold_units=row.sold_units)


class Catalog:
    """What is sold and how many units are on hand."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_products(self, *, skus: list[str] | None, limit: int, offset: int) -> tuple[list[Product], int]:
        """A page of products by sku (only ``skus`` when given), and how many there are in all."""
        if skus:
            return await self._products_by_sku(skus, limit=limit, offset=offset)
        async with self.db.session() as session:
            total = (await session.execute(select(func.count()).select_from(products))).scalar_one()
            rows = await session.execute(select(products).order_by(products.c.sku).limit(limit).offset(offset))
            return [_product(row) for row in rows], total

    async def _products_by_sku(self, skus: list[str], *, limit: int, offset: int) -> tuple[list[Product], int]:
        """A checkout's price lookup. A page that ends before ``limit`` holds the last match, so
        its rows tell the total and the count is needed only otherwise."""
        params = {"skus": skus, "limit": limit, "offset": offset}
        async with self.db.session() as session:
            rows = (await session.execute(_PRODUCTS_BY_SKU, params)).all()
            if len(rows) < limit and (rows or offset == 0):
                total = offset + len(rows)
            else:
                total = (await session.execute(_COUNT_PRODUCTS_BY_SKU, {"skus": skus})).scalar_one()
        return [_product(row) for row in rows], total

    async def get_product(self, sku: str) -> Product:
        async with self.db.session() as session:
            row = (await session.execute(select(products).where(products.c.sku == sku))).first()
        if row is None:
            raise ProductNotFound(sku)
        return _product(row)

    async def put_product(self, sku: str, info: ProductInfo) -> tuple[Product, bool]:
        """Create the product (with no stock) or update its catalog data (stock untouched).
        Returns the product and whether it was created."""
        fields = asdict(info) | {"updated_at": utcnow()}
        async with self.db.transaction() as session:
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
        return Product(sku=sku, **asdict(info), available=on_hand - reserved), created

    async def list_stock(self, *, limit: int, offset: int) -> tuple[list[StockLevel], int]:
        async with self.db.session() as session:
            total = (await session.execute(select(func.count()).select_from(products))).scalar_one()
            rows = await session.execute(
                select(*_STOCK_COLUMNS).order_by(products.c.sku).limit(limit).offset(offset)
            )
            return [_stock_level(row) for row in rows], total

    async def stock_summary(self) -> StockSummary:
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
        async with self.db.session() as session:
            row = (await session.execute(select(totals, *per_status.values()))).one()
        return StockSummary(
            skus=row.skus, on_hand=int(row.on_hand), reserved=int(row.reserved),
            received_units=int(row.received_units), sold_units=int(row.sold_units),
            reservations_by_status={status: int(getattr(row, f"status_{status}")) for status in per_status},
            min_available=None if row.min_available is None else int(row.min_available),
        )

    async def set_stock(self, sku: str, on_hand: int) -> StockLevel:
        """Set the units on hand (a stock count, a delivery, a write-off). Never below what HELD
        reservations keep. The difference from the old on hand counts as received (negative for a
        write-off); SET expressions read the row as it was, in one statement, so a concurrent commit
        cannot slip between reading and writing."""
        async with self.db.transaction() as session:
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
                return _stock_level(updated)
            current = (await session.execute(select(products.c.reserved).where(products.c.sku == sku))).first()
        if current is None:
            raise ProductNotFound(sku)
        raise StockBelowReserved(sku, current.reserved, on_hand)


class Reservations:
    """Stock held for orders: held all or nothing, then committed, released, restocked or expired.
    Every call is idempotent by order id (orders retries when it does not know the outcome)."""

    def __init__(self, db: Database, *, ttl_seconds: int) -> None:
        self.db = db
        self.ttl_seconds = ttl_seconds  # how long a HELD reservation keeps its units

    async def find(self, order_id: str) -> Reservation | None:
        async with self.db.session() as session:
            row = (await session.execute(_RESERVATION_STATE, {"order": order_id})).first()
            if row is None:
                return None
            return Reservation(order_id, ReservationStatus(row.status), await _quantities(session, order_id),
                               row.expires_at)

    async def get(self, order_id: str) -> Reservation:
        found = await self.find(order_id)
        if found is None:
            raise ReservationNotFound(order_id)
        return found

    async def reserve(self, order_id: str, quantities: Mapping[str, int]) -> tuple[Reservation, bool]:
        """Hold every line's units for the order, all or nothing. Idempotent by order id.
        Returns the reservation and whether it was created now."""
        try:
            return await self._hold(order_id, quantities), True
        except IntegrityError:
            # The order id exists (perhaps a concurrent twin of this very request won): answer with it.
            existing = await self.find(order_id)
            if existing is None:
                raise  # not a duplicate order id: a constraint caught a bug, and it must surface
        if is_tombstone(existing.status, existing.quantities):
            raise ReservationClosed(f"Order {order_id} was released before it was reserved; nothing is held.",
                                    existing.status)
        if not same_items(existing.quantities, quantities):
            raise ReservationMismatch(f"Order {order_id} is already reserved with other items.", existing.status)
        return existing, False

    async def _hold(self, order_id: str, quantities: Mapping[str, int]) -> Reservation:
        now = utcnow()
        expires_at = expiry(now, self.ttl_seconds)
        async with self.db.transaction() as session:
            # First, so a second reserve for this order fails here (IntegrityError) before touching stock.
            await session.execute(
                _INSERT_RESERVATION,
                {"order_id": order_id, "status": HELD, "expires_at": expires_at, "created_at": now, "updated_at": now},
            )
            await session.execute(
                _INSERT_LINES, [{"order_id": order_id, "sku": sku, "quantity": q} for sku, q in quantities.items()]
            )
            short = []
            for sku, quantity in sorted(quantities.items()):
                held = await session.execute(_HOLD_UNITS, {"line_sku": sku, "quantity": quantity, "now": now})
                if held.rowcount != 1:
                    short.append(sku)
            if short:  # raising rolls everything back: nothing held, nothing recorded
                known = set((await session.execute(_KNOWN_SKUS, {"skus": short})).scalars())
                unknown = [sku for sku in short if sku not in known]
                if unknown:
                    raise UnknownSkus(unknown)
                raise OutOfStock(short)
        return Reservation(order_id, HELD, dict(quantities), expires_at)

    async def commit(self, order_id: str) -> Reservation:
        """HELD -> COMMITTED: the order is paid; its units are sold."""
        return await self._step(order_id, COMMIT)

    async def release(self, order_id: str) -> Reservation:
        """HELD -> RELEASED: the order will not be paid; its units are available again. Releasing an
        unknown order records a tombstone, so a reserve that arrives late holds nothing."""
        return await self._step(order_id, RELEASE, tombstone_when_unknown=True)

    async def restock(self, order_id: str) -> Reservation:
        """COMMITTED -> RESTOCKED: a cancelled order's units go back on hand."""
        return await self._step(order_id, RESTOCK)

    async def _step(self, order_id: str, step: Transition, *, tombstone_when_unknown: bool = False) -> Reservation:
        # PostgreSQL reads each statement afresh: a reserve committing between our UPDATE and our
        # SELECT shows up as "should have applied"; looking again resolves it.
        for _ in range(3):
            async with self.db.transaction() as session:
                answer = await _try_step(session, order_id, step, tombstone_when_unknown)
            if answer is not None:
                return answer
        raise ReservationBusy(order_id)

    async def list(self, *, status: ReservationStatus | None, limit: int,
                   offset: int) -> tuple[list[Reservation], int]:
        """A page of reservations, oldest first (only those in ``status`` when given), and how many
        there are in all."""
        where = [reservations.c.status == status] if status else []
        async with self.db.session() as session:
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
        items = [Reservation(row.order_id, ReservationStatus(row.status), lines[row.order_id], row.expires_at)
                 for row in rows]
        return items, total

    async def expire_overdue(self, *, now: datetime | None = None, batch_size: int = 500) -> int:
        """Turn HELD reservations past their expiry into EXPIRED and give their units back.
        Returns how many expired. Safe to run from several replicas at once."""
        now = now or utcnow()
        expired_count = 0
        while True:
            async with self.db.transaction() as session:
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


# --- inside one transaction -----------------------------------------------------------------------


async def _quantities(session: AsyncSession, order_id: str) -> dict[str, int]:
    rows = await session.execute(_LINES_OF_ORDER, {"order": order_id})
    return as_quantities((sku, quantity) for sku, quantity in rows)


async def _move_units(session: AsyncSession, quantities: Mapping[str, int], step: Transition, now: datetime) -> None:
    """Apply ``step``'s effect on stock to every line, in sku order (see the module docstring)."""
    if not quantities:
        return
    await session.execute(
        _MOVE_UNITS,
        [
            {"line_sku": sku, "on_hand_delta": step.on_hand * q, "reserved_delta": step.reserved * q,
             "sold_delta": step.sold * q, "now": now}
            for sku, q in sorted(quantities.items())
        ],
    )


async def _try_step(session: AsyncSession, order_id: str, step: Transition,
                    tombstone_when_unknown: bool) -> Reservation | None:
    """One attempt at ``step``: the reservation as it is after it, or None when it should have
    applied but the UPDATE found another state (a concurrent change: look again)."""
    now = utcnow()
    moved = (
        await session.execute(
            _MOVE_RESERVATION, {"order": order_id, "source": step.source, "target": step.target, "now": now}
        )
    ).first()
    if moved is not None:
        quantities = await _quantities(session, order_id)
        await _move_units(session, quantities, step, now)
        return Reservation(order_id, step.target, quantities, moved.expires_at)

    found = (await session.execute(_RESERVATION_STATE, {"order": order_id})).first()
    if found is None:
        if not tombstone_when_unknown:
            raise ReservationNotFound(order_id)
        tombstone = {"order_id": order_id, "status": ReservationStatus.RELEASED, "expires_at": None,
                     "created_at": now, "updated_at": now}
        inserted = await session.execute(insert_ignoring_duplicates(session.bind.dialect.name, reservations, tombstone))
        return Reservation(order_id, ReservationStatus.RELEASED, {}, None) if inserted.rowcount == 1 else None

    status = ReservationStatus(found.status)
    outcome = step.outcome_for(status)
    if outcome == "conflict":
        raise step.refusal(order_id, status)
    if outcome == "apply":
        return None
    return Reservation(order_id, status, await _quantities(session, order_id), found.expires_at)
