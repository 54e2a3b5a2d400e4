"""payments' database: the one place that reads and writes its tables (and its outbox).

A move of domain.py's table is written in one short transaction guarded by its source status,
together with the ledger entry and the event it brings, so a move and its money and event land
together or not at all, and of two racing moves only one lands. No transaction is ever open while
the card processor is called.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from microshop_chassis.db import Database, utcnow
from microshop_chassis.outbox import add_event
from microshop_chassis.tables import insert_or_ignore
from sqlalchemy import bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from .domain import VELOCITY_DECLINE_CODE, LedgerKind, LedgerTotals, PaymentStatus, Transition, ledger_amount
from .events import payment_event
from .models import CardUse, LedgerEntry, Payment

payments = Payment.__table__
ledger_entries = LedgerEntry.__table__
card_uses = CardUse.__table__

# Statements on the checkout's path are built once, their values given at execution: building one
# costs more than running it (docs/performance.md, "Prebuilt statements"). They are Core statements
# on the tables: loading through the ORM's identity map cost more than the query.
_PAYMENT_OF_ORDER = select(payments).where(payments.c.order_id == bindparam("order_id"))
_INSERT_PAYMENT = insert(payments)
_PAYMENT_COLUMNS = frozenset(column.key for column in payments.columns)
# The SET clause is the columns named in the parameters besides these two.
_MOVE_PAYMENT = update(payments).where(payments.c.id == bindparam("moved_id"),
                                       payments.c.status == bindparam("source"))
_INSERT_LEDGER_ENTRY = insert(ledger_entries)
_DECLINED_CARDS = (
    select(func.max(payments.c.updated_at))
    .where(payments.c.customer_id == bindparam("customer"), payments.c.status == PaymentStatus.DECLINED,
           payments.c.updated_at > bindparam("since"), payments.c.card_last4.is_not(None),
           or_(payments.c.decline_code.is_(None), payments.c.decline_code != VELOCITY_DECLINE_CODE))
    .group_by(payments.c.card_last4)
)
_FORGET_OLD_CARD_USES = delete(card_uses).where(card_uses.c.customer_id == bindparam("customer"),
                                                card_uses.c.last_used_at <= bindparam("since"))
_TOUCH_CARD_USE = (
    update(card_uses)
    .where(card_uses.c.customer_id == bindparam("customer"), card_uses.c.card_last4 == bindparam("last4"))
    .values(last_used_at=bindparam("now"))
)
_OTHER_CARDS_USED = select(card_uses.c.last_used_at).where(
    card_uses.c.customer_id == bindparam("customer"), card_uses.c.card_last4 != bindparam("last4"),
    card_uses.c.last_used_at > bindparam("since"))


class PaymentStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def find(self, order_id: str) -> Payment | None:
        async with self.db.session() as session:
            row = (await session.execute(_PAYMENT_OF_ORDER, {"order_id": order_id})).first()
        return None if row is None else Payment(**row._mapping)

    async def create(self, transition: Transition, *, order_id: str, customer_id: str, amount_cents: int,
                     currency: str, idempotency_key: str | None) -> Payment | None:
        """Insert an order's payment in ``transition``'s target status (a move from no payment);
        None when the order has one already: the unique order id decides a race, also between
        replicas."""
        payment, created = await self.find_or_create(transition, order_id=order_id, customer_id=customer_id,
                                                     amount_cents=amount_cents, currency=currency,
                                                     idempotency_key=idempotency_key)
        return payment if created else None

    async def find_or_create(self, transition: Transition, *, order_id: str, customer_id: str, amount_cents: int,
                             currency: str, idempotency_key: str | None) -> tuple[Payment | None, bool]:
        """The order's payment and whether this call inserted it (as ``create``, when the order had
        none); None when a racer inserted one meanwhile. The look-up runs in the insert's
        transaction: one unit of work for a new order instead of two."""
        if transition.source is not None:
            raise ValueError(f"{transition.name} moves an existing payment")
        now = utcnow()
        row = {
            "id": str(uuid.uuid4()), "order_id": order_id, "customer_id": customer_id, "amount_cents": amount_cents,
            "currency": currency, "status": transition.target, "card_brand": None, "card_last4": None,
            "decline_code": None, "processor_charge_id": None, "processor_refund_id": None,
            "idempotency_key": idempotency_key, "created_at": now, "updated_at": now,
        }
        try:
            async with self.db.transaction() as session:
                found = (await session.execute(_PAYMENT_OF_ORDER, {"order_id": order_id})).first()
                if found is not None:
                    return Payment(**found._mapping), False
                await session.execute(_INSERT_PAYMENT, row)
        except IntegrityError:
            return None, False
        return Payment(**row), True

    async def move(self, payment: Payment, transition: Transition, **changes: Any) -> bool:
        """Move ``payment`` by ``transition`` if it is still in the transition's source status,
        writing ``changes``, the ledger entry and the event in the same transaction; ``payment`` is
        updated to match. False when it is no longer in that status (another move landed first)."""
        unknown = changes.keys() - _PAYMENT_COLUMNS
        if unknown:  # the UPDATE would leave them out, and only the object in memory would change
            raise ValueError(f"not columns of payments: {', '.join(sorted(unknown))}")
        now = utcnow()
        values = {"status": transition.target, "updated_at": now, **changes}
        async with self.db.transaction() as session:
            moved = await session.execute(_MOVE_PAYMENT, {"moved_id": payment.id, "source": transition.source,
                                                          **values})
            if moved.rowcount != 1:
                return False
            for name, value in values.items():
                setattr(payment, name, value)
            if transition.ledger is not None:
                await session.execute(_INSERT_LEDGER_ENTRY, {
                    "id": str(uuid.uuid4()), "payment_id": payment.id, "kind": transition.ledger,
                    "amount_cents": ledger_amount(transition.ledger, payment.amount_cents), "created_at": now,
                })
            if transition.event is not None:
                await add_event(session, payment_event(payment, transition.event))
        return True

    async def note_voided_charge(self, payment_id: str, charge_id: str) -> None:
        """Write on a VOIDED payment the charge to give back, unless one is written already."""
        async with self.db.transaction() as session:
            await session.execute(
                update(Payment)
                .where(Payment.id == payment_id, Payment.status == PaymentStatus.VOIDED,
                       Payment.processor_charge_id.is_(None))
                .values(processor_charge_id=charge_id, updated_at=utcnow())
            )

    async def note_refund(self, payment: Payment, refund_id: str) -> None:
        """Record that the processor gave back the charge of a VOIDED payment."""
        now = utcnow()
        async with self.db.transaction() as session:
            await session.execute(
                update(Payment).where(Payment.id == payment.id).values(processor_refund_id=refund_id, updated_at=now)
            )
        payment.processor_refund_id, payment.updated_at = refund_id, now

    async def page(self, *, status: PaymentStatus | None, limit: int, offset: int) -> tuple[list[Payment], int]:
        """Oldest first."""
        where = [Payment.status == status] if status else []
        async with self.db.session() as session:
            total = (await session.execute(select(func.count()).select_from(Payment).where(*where))).scalar_one()
            rows = await session.execute(
                select(Payment).where(*where).order_by(Payment.created_at, Payment.id).limit(limit).offset(offset)
            )
            return list(rows.scalars()), total

    async def ledger_totals(self) -> LedgerTotals:
        is_capture = LedgerEntry.kind == LedgerKind.CAPTURE
        is_refund = LedgerEntry.kind == LedgerKind.REFUND
        async with self.db.session() as session:
            row = (
                await session.execute(
                    select(
                        func.coalesce(func.sum(case((is_capture, LedgerEntry.amount_cents), else_=0)), 0),
                        func.coalesce(func.sum(case((is_refund, -LedgerEntry.amount_cents), else_=0)), 0),
                        func.coalesce(func.sum(case((is_capture, 1), else_=0)), 0),
                        func.coalesce(func.sum(case((is_refund, 1), else_=0)), 0),
                    )
                )
            ).one()
            counted = await session.execute(select(Payment.status, func.count()).group_by(Payment.status))
            by_status = {status.value: 0 for status in PaymentStatus} | {status: n for status, n in counted.all()}
        # PostgreSQL sums BIGINT into NUMERIC (Decimal): bring every figure back to int.
        captured, refunded, captures, refunds = (int(value) for value in row)
        return LedgerTotals(captured_cents=captured, refunded_cents=refunded, captures=captures, refunds=refunds,
                            payments_by_status=by_status)

    # --- velocity -----------------------------------------------------------------------------

    async def declined_cards(self, customer_id: str, *, since: datetime) -> list[datetime]:
        """When each different card of the customer was last declined by the processor since
        ``since`` (payments' own velocity refusals are not counted: no card was tried)."""
        async with self.db.session() as session:
            rows = await session.execute(_DECLINED_CARDS, {"customer": customer_id, "since": since})
            return list(rows.scalars())

    async def use_card(self, customer_id: str, card_last4: str, *, now: datetime, since: datetime) -> list[datetime]:
        """Note that the customer uses this card now, and return when each of the customer's other
        cards was last used since ``since``. The use is written (and committed) before the others are
        counted, so of concurrent new cards none can miss the others: replicas included."""
        use = {"customer": customer_id, "last4": card_last4, "now": now, "since": since}
        async with self.db.session() as session:
            await session.execute(_FORGET_OLD_CARD_USES, use)
            touched = await session.execute(_TOUCH_CARD_USE, use)
            if touched.rowcount == 0:
                await session.execute(insert_or_ignore(session.bind.dialect.name, card_uses),
                                      {"customer_id": customer_id, "card_last4": card_last4, "last_used_at": now})
            await session.commit()  # the use is committed before the others are read (see above)
            rows = await session.execute(_OTHER_CARDS_USED, use)
            return list(rows.scalars())

    async def forget_card(self, customer_id: str, card_last4: str) -> None:
        """Take back a use that was refused: a refused attempt does not count as a card used."""
        async with self.db.transaction() as session:
            await session.execute(delete(CardUse).where(CardUse.customer_id == customer_id,
                                                        CardUse.card_last4 == card_last4))
