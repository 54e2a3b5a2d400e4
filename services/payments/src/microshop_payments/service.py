"""payments' use cases: plain async functions over the database and the card processor.

No transaction is open while the processor is called: write the intent, call, then write everything
the call caused (payment status, ledger entry, outbox event) in one short transaction guarded by the
status it expects, so a refund racing a charge is decided by whichever write lands first.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import structlog
from microshop_chassis.db import Database
from microshop_chassis.errors import Problem
from microshop_chassis.events import Event
from microshop_chassis.outbox import add_event
from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError

from .domain import (
    CURRENCY,
    LedgerKind,
    PaymentStatus,
    charge_description,
    ledger_amount,
    refund_key,
    same_charge,
    void_key,
)
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
    """Charge an order once. A repeat (any key) answers from the recorded payment.

    The intent (PENDING, with the key) is written before the processor is called, so a refund
    arriving meanwhile finds it, and every call for the order uses the key stored on it: a second
    key can never make a second charge.
    """
    payment = await _intent(db, idempotency_key=idempotency_key, order_id=order_id, customer_id=customer_id,
                            amount_cents=amount_cents, currency=currency)
    if payment.status == PaymentStatus.VOIDED:
        await _finish_void(db, processor, payment)
        raise _voided(order_id)
    _checked_replay(payment, amount_cents, currency)
    if payment.status != PaymentStatus.PENDING:
        return payment
    # The key on the row, not the caller's: a repeat after an unknown outcome finds that charge.
    # A failure raises and leaves the payment PENDING (never deleted): its outcome is settled by the
    # next charge request or by a refund asking the processor.
    result = await processor.charge(
        idempotency_key=payment.idempotency_key, token=card_token, amount_cents=payment.amount_cents,
        currency=payment.currency, description=charge_description(order_id),
    )
    if await _record_outcome(db, payment, result):
        log.info("payment_recorded", order_id=order_id, payment_id=payment.id, status=payment.status,
                 amount_cents=payment.amount_cents)
        return payment
    return await _outcome_not_recorded(db, processor, payment, result, amount_cents, currency)


async def _intent(
    db: Database, *, idempotency_key: str, order_id: str, customer_id: str, amount_cents: int, currency: str
) -> Payment:
    """The order's payment, inserted PENDING (in its own short transaction) when there is none."""
    existing = await find_payment(db, order_id)
    if existing is not None:
        return existing
    now = datetime.now(UTC)
    payment = Payment(
        id=str(uuid.uuid4()), order_id=order_id, customer_id=customer_id, amount_cents=amount_cents,
        currency=currency, status=PaymentStatus.PENDING, card_brand=None, card_last4=None, decline_code=None,
        processor_charge_id=None, processor_refund_id=None, idempotency_key=idempotency_key,
        created_at=now, updated_at=now,
    )
    try:
        async with db.transaction() as session:
            session.add(payment)  # the unique order_id decides a race, also between replicas
    except IntegrityError:
        winner = await find_payment(db, order_id)
        if winner is None:  # the conflict was not on order_id: a genuine error
            raise RuntimeError(f"payment insert for order {order_id} conflicted, yet no payment exists") from None
        log.info("charge_race_lost", order_id=order_id, payment_id=winner.id, status=winner.status)
        return winner
    log.info("payment_intent_recorded", order_id=order_id, payment_id=payment.id)
    return payment


async def _record_outcome(db: Database, payment: Payment, result: ChargeResult) -> bool:
    """Move a PENDING payment to what the processor did, with its ledger entry and event, in one
    transaction. False when it is no longer PENDING (a refund voided it, or a racer recorded it)."""
    now = datetime.now(UTC)
    values = {
        "status": PaymentStatus.CAPTURED if result.approved else PaymentStatus.DECLINED,
        "card_brand": result.brand, "card_last4": result.last4, "decline_code": result.decline_code,
        "processor_charge_id": result.charge_id, "updated_at": now,
    }
    async with db.transaction() as session:
        changed = await session.execute(
            update(Payment).where(Payment.id == payment.id, Payment.status == PaymentStatus.PENDING).values(**values)
        )
        if changed.rowcount != 1:
            return False
        for name, value in values.items():
            setattr(payment, name, value)
        if result.approved:
            session.add(_ledger_entry(payment.id, LedgerKind.CAPTURE, payment.amount_cents, now))
        await add_event(session, _payment_event(payment))
    return True


async def _outcome_not_recorded(
    db: Database, processor: CardProcessor, payment: Payment, result: ChargeResult, amount_cents: int,
    currency: str,
) -> Payment:
    """The payment left PENDING while the processor was charging: answer from what it is now."""
    current = await find_payment(db, payment.order_id)
    if current.status == PaymentStatus.VOIDED:
        # Refunded before the charge completed: give the money back at once; the order gets none.
        log.warning("charge_completed_after_void", order_id=payment.order_id, charge_id=result.charge_id,
                    approved=result.approved)
        if result.approved:
            await _finish_void(db, processor, current, result.charge_id)
        raise _voided(payment.order_id)
    # A racing request (or a refund settling the payment) recorded it; with one key per payment
    # that is this very charge. Anything else would be a second charge: give it back.
    if result.approved and current.processor_charge_id != result.charge_id:
        await _void_stray_charge(processor, payment.order_id, result.charge_id)
    return _checked_replay(current, amount_cents, currency)


async def _finish_void(db: Database, processor: CardProcessor, payment: Payment,
                       charge_id: str | None = None) -> Payment:
    """Give back a charge made for a VOIDED payment. The charge id is written on the row first,
    so if the processor is down now, the next charge or refund call for the order retries the void."""
    if charge_id is not None and payment.processor_charge_id is None:
        async with db.transaction() as session:
            await session.execute(
                update(Payment)
                .where(Payment.id == payment.id, Payment.status == PaymentStatus.VOIDED,
                       Payment.processor_charge_id.is_(None))
                .values(processor_charge_id=charge_id, updated_at=datetime.now(UTC))
            )
        payment = await find_payment(db, payment.order_id)
        if payment.processor_charge_id != charge_id:  # another charge is owed back already
            await _void_stray_charge(processor, payment.order_id, charge_id)
    if payment.processor_charge_id is None or payment.processor_refund_id is not None:
        return payment  # nothing was charged, or it was given back already
    refund_id = await processor.refund(idempotency_key=void_key(payment.processor_charge_id),
                                       charge_id=payment.processor_charge_id)
    now = datetime.now(UTC)
    async with db.transaction() as session:
        await session.execute(
            update(Payment).where(Payment.id == payment.id).values(processor_refund_id=refund_id, updated_at=now)
        )
    payment.processor_refund_id, payment.updated_at = refund_id, now
    log.warning("voided_payment_charge_refunded", order_id=payment.order_id, charge_id=payment.processor_charge_id)
    return payment


async def _void_stray_charge(processor: CardProcessor, order_id: str, charge_id: str) -> None:
    """Refund a charge that is not the one recorded for its order (should not happen); logged loudly."""
    try:
        await processor.refund(idempotency_key=void_key(charge_id), charge_id=charge_id)
        log.warning("duplicate_charge_voided", order_id=order_id, charge_id=charge_id)
    except Problem:
        log.error("duplicate_charge_not_voided", order_id=order_id, charge_id=charge_id)


def _voided(order_id: str) -> Problem:
    return Problem(409, f"The payment for order {order_id} was voided (refunded before it was charged); "
                        "the order cannot be charged.", type="payment-voided")


def _checked_replay(payment: Payment, amount_cents: int, currency: str) -> Payment:
    if not same_charge(payment.amount_cents, payment.currency, amount_cents, currency):
        raise Problem(
            409,
            f"Order {payment.order_id} already has a payment of {payment.amount_cents} {payment.currency}.",
            type="payment-mismatch", payment_id=payment.id,
        )
    return payment


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
    """Refund an order's payment in full; refunding again changes nothing.

    No payment yet: a VOIDED tombstone is written, so a charge still on its way is refused (or, if
    the processor already charged it, given back). A PENDING one is settled by asking the
    processor what it did under the payment's key, never by guessing.
    """
    while True:  # each turn, the payment moved on (PENDING -> final), so this ends
        payment = await find_payment(db, order_id)
        if payment is None:
            tombstone = await _tombstone(db, order_id)
            if tombstone is not None:
                return tombstone
        elif payment.status == PaymentStatus.PENDING:
            await _settle_pending(db, processor, payment)
        else:
            break
    if payment.status == PaymentStatus.VOIDED:
        return await _finish_void(db, processor, payment)
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


async def _tombstone(db: Database, order_id: str) -> Payment | None:
    """Insert a VOIDED payment for an order that has none; None when a charge's intent got there first.

    It moves no money: amount 0, no customer (only services and admins see it).
    """
    now = datetime.now(UTC)
    payment = Payment(
        id=str(uuid.uuid4()), order_id=order_id, customer_id="", amount_cents=0, currency=CURRENCY,
        status=PaymentStatus.VOIDED, card_brand=None, card_last4=None, decline_code=None,
        processor_charge_id=None, processor_refund_id=None, idempotency_key=None, created_at=now, updated_at=now,
    )
    try:
        async with db.transaction() as session:
            session.add(payment)
    except IntegrityError:
        return None
    log.info("payment_voided", order_id=order_id, payment_id=payment.id, had_intent=False)
    return payment


async def _settle_pending(db: Database, processor: CardProcessor, payment: Payment) -> None:
    """Ask the processor what became of a PENDING payment's charge and record it; if it made none,
    void the payment (a charge completing later then finds it VOIDED and gives the money back).
    Every write is guarded by status = PENDING: when it misses, the caller looks again."""
    found = await processor.find_charge(payment.idempotency_key)
    if found is not None and found.description != charge_description(payment.order_id):
        # The key was first used for something else (a caller reusing keys): not this order's charge.
        log.warning("pending_key_belongs_elsewhere", order_id=payment.order_id, charge_id=found.charge_id)
        found = None
    if found is not None:
        if await _record_outcome(db, payment, found):
            log.info("pending_payment_settled", order_id=payment.order_id, status=payment.status)
        return
    async with db.transaction() as session:
        changed = await session.execute(
            update(Payment)
            .where(Payment.id == payment.id, Payment.status == PaymentStatus.PENDING)
            .values(status=PaymentStatus.VOIDED, updated_at=datetime.now(UTC))
        )
    if changed.rowcount == 1:
        log.info("payment_voided", order_id=payment.order_id, payment_id=payment.id, had_intent=True)


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


async def ledger_summary(db: Database) -> dict[str, Any]:
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
        counted = await session.execute(select(Payment.status, func.count()).group_by(Payment.status))
        by_status = {status.value: 0 for status in PaymentStatus} | {status: n for status, n in counted.all()}
    # PostgreSQL sums BIGINT into NUMERIC (Decimal): bring every figure back to int.
    captured, refunded, captures, refunds = (int(value) for value in row)
    return {"captured_cents": captured, "refunded_cents": refunded, "net_cents": captured - refunded,
            "captures": captures, "refunds": refunds, "payments_by_status": by_status}
