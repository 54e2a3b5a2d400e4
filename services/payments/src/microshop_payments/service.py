"""payments' use cases: tokenize a card, charge an order once, refund it, read payments and the ledger.

No transaction is open while the processor is called: write the intent, call, then write what
the call caused as one move of domain.py's table (status, ledger entry, event together), guarded
by the status it expects, so a refund racing a charge is decided by whichever write lands first.

Returns payments as stored (``models.Payment``); refusals are the domain errors of domain.py, and
a processor giving no usable answer raises ``ProcessorUnavailable`` / ``ProcessorError``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from microshop_chassis.auth import Principal
from microshop_chassis.db import Database, utcnow
from microshop_chassis.downstream import DownstreamError

from .domain import (
    CURRENCY,
    DECLINE,
    INTENT,
    REFUND,
    TOMBSTONE,
    VELOCITY_DECLINE_CODE,
    VOID,
    CardDeclined,
    LedgerTotals,
    PaymentMismatch,
    PaymentNotCaptured,
    PaymentNotFound,
    PaymentStatus,
    PaymentVoided,
    VelocityLimit,
    VelocityLimited,
    charge_description,
    charge_outcome,
    may_view,
    refund_key,
    same_charge,
    void_key,
)
from .models import Payment
from .processor import CardProcessor, CardToken, ChargeResult
from .store import PaymentStore

log = structlog.get_logger("microshop.payments")


# Defaults of PaymentsSettings' velocity_* settings (see there why these figures).
CARDS_LIMIT = VelocityLimit(5, timedelta(minutes=10))
DECLINED_CARDS_LIMIT = VelocityLimit(3, timedelta(hours=1))


class Payments:
    def __init__(self, db: Database, processor: CardProcessor, *, cards_limit: VelocityLimit = CARDS_LIMIT,
                 declined_cards_limit: VelocityLimit = DECLINED_CARDS_LIMIT) -> None:
        self.store = PaymentStore(db)
        self.processor = processor
        self.cards_limit = cards_limit
        self.declined_cards_limit = declined_cards_limit

    async def tokenize(self, *, number: str, exp_month: int, exp_year: int, cvc: str,
                       customer_id: str | None = None) -> CardToken:
        """The processor's token for a card (for orders). For a customer, the velocity limits come
        first: ``VelocityLimited`` (and no processor call) when they had too many different cards
        declined lately, or when this card would be one different card too many. Only the card's
        last four digits are stored, for that count."""
        if customer_id is not None:
            now = utcnow()
            await self._check_declines(customer_id, now)
            last4 = "".join(ch for ch in number if ch.isdigit())[-4:]
            others = await self.store.use_card(customer_id, last4, now=now, since=now - self.cards_limit.window)
            wait = self.cards_limit.wait(others, now)
            if wait is not None:
                await self.store.forget_card(customer_id, last4)
                log.warning("payment_velocity_refused", customer_id=customer_id, limit="cards",
                            cards=len(others) + 1, retry_after=round(wait))
                raise VelocityLimited(wait)
        return await self.processor.tokenize(number=number, exp_month=exp_month, exp_year=exp_year, cvc=cvc)

    async def _declines_wait(self, customer_id: str, now: datetime) -> float | None:
        window = self.declined_cards_limit.window
        return self.declined_cards_limit.wait(await self.store.declined_cards(customer_id, since=now - window), now)

    async def _check_declines(self, customer_id: str, now: datetime) -> None:
        wait = await self._declines_wait(customer_id, now)
        if wait is not None:
            log.warning("payment_velocity_refused", customer_id=customer_id, limit="declined_cards",
                        retry_after=round(wait))
            raise VelocityLimited(wait)

    # --- charging -------------------------------------------------------------------------------

    async def charge(
        self, *, idempotency_key: str, order_id: str, customer_id: str, amount_cents: int, currency: str,
        card_token: str,
    ) -> Payment:
        """Charge an order once: the payment CAPTURED (or REFUNDED, when it was refunded since),
        ``CardDeclined`` when the processor declined it. A repeat (any key) answers from the
        recorded payment.

        The intent (PENDING, with the key) is written before the processor is called, so a refund
        arriving meanwhile finds it, and every call for the order uses the key stored on it: a
        second key can never make a second charge.
        """
        payment = await self._charge(idempotency_key=idempotency_key, order_id=order_id, customer_id=customer_id,
                                     amount_cents=amount_cents, currency=currency, card_token=card_token)
        if payment.status == PaymentStatus.DECLINED:
            raise CardDeclined(decline_code=payment.decline_code, payment_id=payment.id, order_id=payment.order_id)
        return payment

    async def _charge(
        self, *, idempotency_key: str, order_id: str, customer_id: str, amount_cents: int, currency: str,
        card_token: str,
    ) -> Payment:
        payment, created = await self._intent(idempotency_key=idempotency_key, order_id=order_id,
                                              customer_id=customer_id, amount_cents=amount_cents, currency=currency)
        if created and await self._declines_wait(customer_id, utcnow()) is not None:
            # A checkout that got past tokenization while the customer's other cards were being
            # declined: declined here, without the processor (a new intent: no charge was tried).
            if await self.store.move(payment, DECLINE, decline_code=VELOCITY_DECLINE_CODE):
                log.warning("payment_velocity_declined", order_id=order_id, customer_id=customer_id)
                return payment
            payment = await self.store.find(order_id)  # a refund voided it meanwhile
        if payment.status == PaymentStatus.VOIDED:
            await self._finish_void(payment)
            raise PaymentVoided(order_id)
        _checked_replay(payment, amount_cents, currency)
        if payment.status != PaymentStatus.PENDING:
            return payment
        # The key on the row, not the caller's: a repeat after an unknown outcome finds that charge.
        # A failure raises and leaves the payment PENDING (never deleted): its outcome is settled by
        # the next charge request or by a refund asking the processor.
        result = await self.processor.charge(
            idempotency_key=payment.idempotency_key, token=card_token, amount_cents=payment.amount_cents,
            currency=payment.currency, description=charge_description(order_id),
        )
        if await self._record(payment, result):
            log.info("payment_recorded", order_id=order_id, payment_id=payment.id, status=payment.status,
                     amount_cents=payment.amount_cents)
            return payment
        return await self._outcome_not_recorded(payment, result, amount_cents, currency)

    async def _intent(
        self, *, idempotency_key: str, order_id: str, customer_id: str, amount_cents: int, currency: str
    ) -> tuple[Payment, bool]:
        """The order's payment, inserted PENDING (in its own short transaction) when there is none;
        and whether it was inserted by this call."""
        payment, created = await self.store.find_or_create(INTENT, order_id=order_id, customer_id=customer_id,
                                                           amount_cents=amount_cents, currency=currency,
                                                           idempotency_key=idempotency_key)
        if payment is None:  # a racer inserted one between the look-up and the insert
            winner = await self.store.find(order_id)
            if winner is None:  # the conflict was not on order_id: a genuine error
                raise RuntimeError(f"payment insert for order {order_id} conflicted, yet no payment exists")
            log.info("charge_race_lost", order_id=order_id, payment_id=winner.id, status=winner.status)
            return winner, False
        if created:
            log.info("payment_intent_recorded", order_id=order_id, payment_id=payment.id)
        return payment, created

    async def _record(self, payment: Payment, result: ChargeResult) -> bool:
        """Move a PENDING payment to what the processor did; False when it is no longer PENDING
        (a refund voided it, or a racer recorded it)."""
        return await self.store.move(
            payment, charge_outcome(result.approved), card_brand=result.brand, card_last4=result.last4,
            decline_code=result.decline_code, processor_charge_id=result.charge_id,
        )

    async def _outcome_not_recorded(
        self, payment: Payment, result: ChargeResult, amount_cents: int, currency: str
    ) -> Payment:
        """The payment left PENDING while the processor was charging: answer from what it is now."""
        current = await self.store.find(payment.order_id)
        if current.status == PaymentStatus.VOIDED:
            # Refunded before the charge completed: give the money back at once; the order gets none.
            log.warning("charge_completed_after_void", order_id=payment.order_id, charge_id=result.charge_id,
                        approved=result.approved)
            if result.approved:
                await self._finish_void(current, result.charge_id)
            raise PaymentVoided(payment.order_id)
        # A racing request (or a refund settling the payment) recorded it; with one key per payment
        # that is this very charge. Anything else would be a second charge: give it back.
        if result.approved and current.processor_charge_id != result.charge_id:
            await self._void_stray_charge(payment.order_id, result.charge_id)
        return _checked_replay(current, amount_cents, currency)

    async def _finish_void(self, payment: Payment, charge_id: str | None = None) -> Payment:
        """Give back a charge made for a VOIDED payment. The charge id is written on the row first,
        so if the processor is down now, the next charge or refund call for the order retries the void."""
        if charge_id is not None and payment.processor_charge_id is None:
            await self.store.note_voided_charge(payment.id, charge_id)
            payment = await self.store.find(payment.order_id)
            if payment.processor_charge_id != charge_id:  # another charge is owed back already
                await self._void_stray_charge(payment.order_id, charge_id)
        if payment.processor_charge_id is None or payment.processor_refund_id is not None:
            return payment  # nothing was charged, or it was given back already
        refund_id = await self.processor.refund(idempotency_key=void_key(payment.processor_charge_id),
                                                charge_id=payment.processor_charge_id)
        await self.store.note_refund(payment, refund_id)
        log.warning("voided_payment_charge_refunded", order_id=payment.order_id, charge_id=payment.processor_charge_id)
        return payment

    async def _void_stray_charge(self, order_id: str, charge_id: str) -> None:
        """Refund a charge that is not the one recorded for its order (should not happen); logged loudly."""
        try:
            await self.processor.refund(idempotency_key=void_key(charge_id), charge_id=charge_id)
            log.warning("duplicate_charge_voided", order_id=order_id, charge_id=charge_id)
        except DownstreamError:
            log.error("duplicate_charge_not_voided", order_id=order_id, charge_id=charge_id)

    # --- refunding ------------------------------------------------------------------------------

    async def refund(self, order_id: str) -> Payment:
        """Refund an order's payment in full; refunding again changes nothing.

        No payment yet: a VOIDED tombstone is written, so a charge still on its way is refused (or,
        if the processor already charged it, given back). A PENDING one is settled by asking the
        processor what it did under the payment's key, never by guessing.
        """
        while True:  # each turn, the payment moved on (PENDING -> settled), so this ends
            payment = await self.store.find(order_id)
            if payment is None:
                # It moves no money: amount 0, no customer (only services and admins see it).
                tombstone = await self.store.create(TOMBSTONE, order_id=order_id, customer_id="", amount_cents=0,
                                                    currency=CURRENCY, idempotency_key=None)
                if tombstone is not None:
                    log.info("payment_voided", order_id=order_id, payment_id=tombstone.id, had_intent=False)
                    return tombstone
                # A charge's intent got there first: go on as for PENDING.
            elif payment.status == PaymentStatus.PENDING:
                await self._settle_pending(payment)
            else:
                break
        if payment.status == PaymentStatus.VOIDED:
            return await self._finish_void(payment)
        if payment.status == PaymentStatus.REFUNDED:
            return payment
        if payment.status == PaymentStatus.DECLINED:
            raise PaymentNotCaptured(order_id)
        refund_id = await self.processor.refund(idempotency_key=refund_key(order_id),
                                                charge_id=payment.processor_charge_id)
        # Of two racing refunds only one writes the ledger entry and the event.
        if not await self.store.move(payment, REFUND, processor_refund_id=refund_id):
            return await self.store.find(order_id)
        log.info("payment_refunded", order_id=order_id, payment_id=payment.id, amount_cents=payment.amount_cents)
        return payment

    async def _settle_pending(self, payment: Payment) -> None:
        """Ask the processor what became of a PENDING payment's charge and record it; if it made none,
        void the payment (a charge completing later then finds it VOIDED and gives the money back).
        Every move is guarded by status = PENDING: when it misses, the caller looks again."""
        found = await self.processor.find_charge(payment.idempotency_key)
        if found is not None and found.description != charge_description(payment.order_id):
            # The key was first used for something else (a caller reusing keys): not this order's charge.
            log.warning("pending_key_belongs_elsewhere", order_id=payment.order_id, charge_id=found.charge_id)
            found = None
        if found is not None:
            if await self._record(payment, found):
                log.info("pending_payment_settled", order_id=payment.order_id, status=payment.status)
            return
        if await self.store.move(payment, VOID):
            log.info("payment_voided", order_id=payment.order_id, payment_id=payment.id, had_intent=True)

    # --- reading --------------------------------------------------------------------------------

    async def get(self, viewer: Principal, order_id: str) -> Payment:
        payment = await self.store.find(order_id)
        # Someone else's payment answers like a missing one: its existence is not revealed.
        if payment is None or not may_view(payment.customer_id, viewer.id, viewer.role):
            raise PaymentNotFound(order_id)
        return payment

    async def list(self, *, status: PaymentStatus | None, limit: int, offset: int) -> tuple[list[Payment], int]:
        """Oldest first."""
        return await self.store.page(status=status, limit=limit, offset=offset)

    async def ledger(self) -> LedgerTotals:
        return await self.store.ledger_totals()


def _checked_replay(payment: Payment, amount_cents: int, currency: str) -> Payment:
    if not same_charge(payment.amount_cents, payment.currency, amount_cents, currency):
        raise PaymentMismatch(order_id=payment.order_id, amount_cents=payment.amount_cents,
                              currency=payment.currency, payment_id=payment.id)
    return payment
