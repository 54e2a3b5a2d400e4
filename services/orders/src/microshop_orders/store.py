"""orders' database: the one place that reads and writes its tables (and its outbox).

Every move of a saga is written with ``WHERE saga_step = <the step just run>``, so two drivers of
one saga (a request and the recovery loop, or two replicas) are harmless: the calls they make are
idempotent, and only one of them can record the move, and so publish its event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from microshop_chassis.db import Database
from microshop_chassis.events import Event
from microshop_chassis.outbox import add_event
from sqlalchemy.exc import IntegrityError

from .domain import OrderStatus, Step
from .models import Order, OrderLine

orders = Order.__table__
order_lines = OrderLine.__table__

# The statements of a checkout are built once: building one costs more than running it
# (docs/performance.md, "Prebuilt statements"). The values come as parameters at execution.
_INSERT_ORDER = sa.insert(orders)
_INSERT_LINES = sa.insert(order_lines)
# Reads are Core rows made into (detached) orders here: the ORM's loading cost more than the queries.
_BY_ID = sa.select(orders).where(orders.c.id == sa.bindparam("order_id"))
_BY_KEY = sa.select(orders).where(orders.c.customer_id == sa.bindparam("customer_id"),
                                  orders.c.idempotency_key == sa.bindparam("key"))
_LINES_OF_ORDER = (sa.select(order_lines.c.sku, order_lines.c.quantity, order_lines.c.unit_price_cents)
                   .where(order_lines.c.order_id == sa.bindparam("order_id")).order_by(order_lines.c.sku))
# The SET clause is the columns named in the parameters besides these two.
_MOVE = sa.update(orders).where(orders.c.id == sa.bindparam("moved_id"),
                                orders.c.saga_step == sa.bindparam("from_step"))


class DuplicateKey(Exception):
    """An order with this customer's Idempotency-Key exists already (a concurrent twin won)."""


class OrderStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, order: Order, event: Event) -> None:
        """Insert a new order with its first event; ``DuplicateKey`` if the customer's key is taken."""
        row = {column.key: getattr(order, column.key) for column in orders.columns}
        lines = [{"order_id": order.id, "sku": line.sku, "quantity": line.quantity,
                  "unit_price_cents": line.unit_price_cents} for line in order.lines]
        try:
            async with self.db.transaction() as session:
                # The unique (customer, key) decides between concurrent twins.
                await session.execute(_INSERT_ORDER, row)
                await session.execute(_INSERT_LINES, lines)
                await add_event(session, event)
        except IntegrityError as exc:
            raise DuplicateKey(order.idempotency_key) from exc

    async def get(self, order_id: str) -> Order | None:
        """The order as stored, lines included (a detached object: nothing is lazy-loaded later)."""
        async with self.db.session() as session:
            return await _order(session, (await session.execute(_BY_ID, {"order_id": order_id})).first())

    async def by_key(self, customer_id: str, key: str) -> Order | None:
        async with self.db.session() as session:
            row = (await session.execute(_BY_KEY, {"customer_id": customer_id, "key": key})).first()
            return await _order(session, row)

    async def page(self, *, customer_id: str | None, status: str | None, limit: int,
                   offset: int) -> tuple[list[Order], int]:
        """Newest first; ``customer_id=None`` means everyone's."""
        where = [] if customer_id is None else [Order.customer_id == customer_id]
        if status:
            where.append(Order.status == status)
        async with self.db.session() as session:
            total = (await session.execute(sa.select(sa.func.count()).select_from(Order).where(*where))).scalar_one()
            rows = await session.execute(
                sa.select(Order).where(*where).order_by(Order.created_at.desc(), Order.id).limit(limit).offset(offset)
            )
            return list(rows.scalars()), total

    async def move(self, order_id: str, step: Step, changes: dict[str, Any], event: Event | None) -> bool:
        """Record a saga move from ``step`` (with its event, in one transaction); False when another
        driver moved the saga first."""
        async with self.db.transaction() as session:
            moved = await session.execute(_MOVE, {"moved_id": order_id, "from_step": step.value, **changes})
            if moved.rowcount != 1:
                return False
            if event is not None:
                await add_event(session, event)
        return True

    async def note_failure(self, order_id: str, step: Step, *, attempts: int, error: str,
                           retry_at: datetime) -> None:
        """A step failed for a technical reason: count it, and lease the saga until its retry."""
        async with self.db.transaction() as session:
            await session.execute(
                sa.update(orders)
                .where(orders.c.id == order_id, orders.c.saga_step == step.value)
                .values(saga_attempts=attempts, saga_last_error=error[:500], saga_lease_until=retry_at)
            )

    async def start_cancel(self, order_id: str, *, now: datetime, lease_until: datetime) -> None:
        """CONFIRMED and done -> the cancellation saga's first step (no-op if it moved already)."""
        async with self.db.transaction() as session:
            await session.execute(
                sa.update(orders)
                .where(orders.c.id == order_id, orders.c.status == OrderStatus.CONFIRMED.value,
                       orders.c.saga_step == Step.DONE.value)
                .values(saga_step=Step.CANCEL_REFUND.value, saga_lease_until=lease_until, updated_at=now)
            )

    async def claim_due(self, *, now: datetime, lease_until: datetime, ignore_leases: bool, skip: set[str],
                        limit: int = 100) -> list[str]:
        """Lease the open sagas whose lease ran out (a crashed driver's, or a failed step's
        backoff), oldest first; ``ignore_leases`` takes every open one."""
        due = orders.c.saga_step != Step.DONE.value
        if not ignore_leases:
            due = sa.and_(due, orders.c.saga_lease_until < now)
        claimed = []
        async with self.db.transaction() as session:
            query = sa.select(orders.c.id).where(due).order_by(orders.c.created_at).limit(limit)
            for order_id in (await session.execute(query)).scalars().all():
                if order_id in skip:
                    continue
                guard = orders.c.id == order_id
                if not ignore_leases:
                    guard = sa.and_(guard, orders.c.saga_lease_until < now)  # only one replica wins
                result = await session.execute(sa.update(orders).where(guard).values(saga_lease_until=lease_until))
                if result.rowcount == 1:
                    claimed.append(order_id)
        return claimed


async def _order(session, row) -> Order | None:
    if row is None:
        return None
    lines = await session.execute(_LINES_OF_ORDER, {"order_id": row.id})
    return Order(**row._mapping, lines=[OrderLine(**line._mapping) for line in lines])
