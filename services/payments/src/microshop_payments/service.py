"""payments' use cases: plain async functions over the database and the card processor.

No transaction is open while the processor is called: read, call, then write everything the call
caused (payment, ledger entry, outbox event) in one short transaction.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import structlog
from microshop_chassis.db import Database
from microshop_chassis.errors import Problem
from microshop_chassis.events import Event
from microshop_chassis.outbox import add_event
from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError

from .domain import LedgerKind, PaymentStatus, ledger_amount, refund_key, same_charge, void_key
from .models import LedgerEntry, Payment
from .processor import CardProcessor, ChargeResult

log = structlog.get_logger("microshop.payments")


async def find_payment(db: Database, order_id: str) -> Payment | None:
    async with db.session() as session:
        return (await session.execute(select(Payment).where(Payment.order_id == order_id))).scalar_one_or_none()


async def charge(
    db: Database, processor: CardProcessor, *, idempotency_key: str, order_id: str, customer_id: str,
    amount_cents: int, currency: str, card_token: str,
) -> Payment:
    """Charge an order once. A repeat (any key) answers from the recorded payment."""
    existing = await find_payment(db, order_id)
    if existing is not None:
        return _checked_replay(existing, amount_cents, currency)

    result = await processor.charge(
        idempotency_key=idempotency_key, token=card_token, amount_cents=amount_cents, currency=currency,
        description=f"order {order_id}",  # ties the key to this order: reusing it elsewhere is refused
    )
    payment = _new_payment(result, order_id=order_id, customer_id=customer_id, amount_cents=amount_cents,
                           currency=currency)
    try:
        async with db.transaction() as session:
            session.add(payment)
            await session.flush()  # the unique order_id decides a race, also between replicas
            if result.approved:
                session.add(_ledger_entry(payment.id, LedgerKind.CAPTURE, amount_cents, payment.created_at))
            await add_event(session, _payment_event(payment))
    except IntegrityError:
        return await _lost_race(db, processor, result, order_id, amount_cents, currency)
    log.info("payment_recorded", order_id=order_id, payment_id=payment.id, status=payment.status,
             amount_cents=amount_cents)
    return payment


async def _lost_race(
    db: Database, processor: CardProcessor, result: ChargeResult, order_id: str, amount_cents: int, currency: str
) -> Payment:
    """Another request recorded this order's payment first: answer with the winner's."""
    winner = await find_payment(db, order_id)
    if winner is None:  # the conflict was not on order_id: a genuine error
        raise RuntimeError(f"payment insert for order {order_id} conflicted, yet no payment exists")
    log.info("charge_race_lost", order_id=order_id, payment_id=winner.id)
    if result.approved and winner.processor_charge_id != result.charge_id:
        # A racing request with a different key charged the card a second time: give it back.
        try:
            await processor.refund(idempotency_key=void_key(result.charge_id), charge_id=result.charge_id)
            log.warning("duplicate_charge_voided", order_id=order_id, charge_id=result.charge_id)
        except Problem:
            log.error("duplicate_charge_not_voided", order_id=order_id, charge_id=result.charge_id)
    return _checked_replay(winner, amount_cents, currency)


def _checked_replay(payment: Payment, amount_cents: int, currency: str) -> Payment:
    if not same_charge(payment.amount_cents, payment.currency, amount_cents, currency):
        raise Problem(
            409,
            f"Order {payment.order_id} already has a payment of {payment.amount_cents} {payment.currency}.",
            type="payment-mismatch", payment_id=payment.id,
        )
    return payment


def _new_payment(result: ChargeResult, *, order_id: str, customer_id: str, amount_cents: int,
                 currency: str) -> Payment:
    now = datetime.now(UTC)
    return Payment(
        id=str(uuid.uuid4()), order_id=order_id, customer_id=customer_id, amount_cents=amount_cents,
        currency=currency,
        status=PaymentStatus.CAPTURED if result.approved else PaymentStatus.DECLINED,
        card_brand=result.brand, card_last4=result.last4, decline_code=result.decline_code,
        processor_charge_id=result.charge_id, processor_refund_id=None, created_at=now, updated_at=now,
    )


def _ledger_entry(payment_id: str, kind: LedgerKind, amount_cents: int, at: datetime) -> LedgerEntry:
    return LedgerEntry(id=str(uuid.uuid4()), payment_id=payment_id, kind=kind,
                       amount_cents=ledger_amount(kind, amount_cents), created_at=at)


def _payment_event(payment: Payment) -> Event:
    data = {"payment_id": payment.id, "order_id": payment.order_id, "customer_id": payment.customer_id,
            "amount_cents": payment.amount_cents, "currency": payment.currency}
    if payment.status == PaymentStatus.CAPTURED:
        return Event(type="PaymentCaptured", source="payments",
                     data={**data, "card_brand": payment.card_brand, "card_last4": payment.card_last4})
    if payment.status == PaymentStatus.DECLINED:
        return Event(type="PaymentDeclined", source="payments", data={**data, "decline_code": payment.decline_code})
    return Event(type="PaymentRefunded", source="payments", data=data)


async def refund(db: Database, processor: CardProcessor, order_id: str) -> Payment:
    """Refund an order's captured payment in full; refunding again changes nothing."""
    payment = await find_payment(db, order_id)
    if payment is None:
        raise Problem(404, f"No payment for order {order_id}.", type="payment-not-found")
    if payment.status == PaymentStatus.REFUNDED:
        return payment
    if payment.status == PaymentStatus.DECLINED:
        raise Problem(409, f"The payment for order {order_id} was declined; nothing to refund.",
                      type="payment-not-captured")
    refund_id = await processor.refund(idempotency_key=refund_key(order_id), charge_id=payment.processor_charge_id)
    now = datetime.now(UTC)
    async with db.transaction() as session:
        # Guarded by status: of two racing refunds only one writes the ledger entry and the event.
        changed = await session.execute(
            update(Payment)
            .where(Payment.id == payment.id, Payment.status == PaymentStatus.CAPTURED)
            .values(status=PaymentStatus.REFUNDED, processor_refund_id=refund_id, updated_at=now)
        )
        if changed.rowcount == 1:
            payment.status, payment.processor_refund_id, payment.updated_at = PaymentStatus.REFUNDED, refund_id, now
            session.add(_ledger_entry(payment.id, LedgerKind.REFUND, payment.amount_cents, now))
            await add_event(session, _payment_event(payment))
    if changed.rowcount != 1:
        return await find_payment(db, order_id)
    log.info("payment_refunded", order_id=order_id, payment_id=payment.id, amount_cents=payment.amount_cents)
    return payment


async def list_payments(
    db: Database, *, status: PaymentStatus | None, limit: int, offset: int
) -> tuple[list[Payment], int]:
    where = [Payment.status == status] if status else []
    async with db.session() as session:
        total = (await session.execute(select(func.count()).select_from(Payment).where(*where))).scalar_one()
        rows = await session.execute(
            select(Payment).where(*where).order_by(Payment.created_at, Payment.id).limit(limit).offset(offset)
        )
        return list(rows.scalars()), total


async def ledger_summary(db: Database) -> dict[str, int]:
    is_capture = LedgerEntry.kind == LedgerKind.CAPTURE
    is_refund = LedgerEntry.kind == LedgerKind.REFUND
    async with db.session() as session:
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
    # PostgreSQL sums BIGINT into NUMERIC (Decimal): bring every figure back to int.
    captured, refunded, captures, refunds = (int(value) for value in row)
    return {"captured_cents": captured, "refunded_cents": refunded, "net_cents": captured - refunded,
            "captures": captures, "refunds": refunds}
