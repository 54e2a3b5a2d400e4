"""payments' HTTP API: routes translate HTTP to the use cases of service.py and back; the domain's
errors and the processor's failures become problem+json here, once (``ERRORS``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from microshop_chassis.auth import AdminUser, CurrentUser, InternalCaller
from microshop_chassis.contracts import (
    INVALID_CARD,
    PAYMENT_DECLINED,
    PAYMENT_NOT_CAPTURED,
    PAYMENT_NOT_FOUND,
    PAYMENT_VELOCITY,
    PAYMENT_VOIDED,
)
from microshop_chassis.errors import VALIDATION_ERROR, ProblemMap, ProblemType, problem_responses
from microshop_chassis.pagination import Page, Paging
from microshop_chassis.provide import Provide
from microshop_chassis.telemetry import annotate_order

from .domain import (
    GENERIC_DECLINE_CODE,
    CardDeclined,
    IdempotencyKeyReused,
    InvalidCard,
    PaymentMismatch,
    PaymentNotCaptured,
    PaymentNotFound,
    PaymentStatus,
    PaymentVoided,
    UnknownCardToken,
    VelocityLimited,
)
from .processor import ProcessorError, ProcessorUnavailable
from .schemas import ChargeIn, ChargeOut, LedgerSummary, PaymentMethodIn, PaymentMethodOut, PaymentOut
from .service import Payments

IDEMPOTENCY_KEY_REQUIRED = ProblemType("idempotency-key-required", 400, "Idempotency-Key required")
IDEMPOTENCY_KEY_REUSED = ProblemType("idempotency-key-reused", 409, "Idempotency-Key reused")
PAYMENT_MISMATCH = ProblemType("payment-mismatch", 409, "Payment mismatch")
UNKNOWN_CARD_TOKEN = ProblemType("unknown-card-token", 422, "Unknown card token")
PROCESSOR_ERROR = ProblemType("processor-error", 502, "Card processor error")
PROCESSOR_UNAVAILABLE = ProblemType("processor-unavailable", 503, "Card processor unavailable",
                                    headers={"Retry-After": "1"})

ERRORS: ProblemMap = {
    InvalidCard: INVALID_CARD,
    CardDeclined: PAYMENT_DECLINED,
    PaymentVoided: PAYMENT_VOIDED,
    PaymentNotCaptured: PAYMENT_NOT_CAPTURED,
    PaymentNotFound: PAYMENT_NOT_FOUND,
    PaymentMismatch: PAYMENT_MISMATCH,
    IdempotencyKeyReused: IDEMPOTENCY_KEY_REUSED,
    UnknownCardToken: UNKNOWN_CARD_TOKEN,
    ProcessorUnavailable: PROCESSOR_UNAVAILABLE,
    ProcessorError: PROCESSOR_ERROR,
}

router = APIRouter(tags=["payments"])
PaymentsDep = Annotated[Payments, Provide(Payments)]

_UNAVAILABLE = "the card processor did not answer, even after retries"


@router.post(
    "/payment-methods", status_code=status.HTTP_201_CREATED, response_model=PaymentMethodOut,
    summary="Tokenize a card at the processor (for orders); stores nothing",
    responses=problem_responses(
        (INVALID_CARD, "the processor refused the card (with its `code`)"),
        (VALIDATION_ERROR, "the body is not valid"),
        (PAYMENT_VELOCITY, "the customer tried or had declined too many different cards lately (with "
                           "Retry-After and `retry_after_seconds`); the processor was not called"),
        (PROCESSOR_UNAVAILABLE, _UNAVAILABLE),
    ),
)
async def create_payment_method(body: PaymentMethodIn, _: InternalCaller, payments: PaymentsDep) -> PaymentMethodOut:
    try:
        card = await payments.tokenize(number=body.card_number, exp_month=body.expiry_month,
                                       exp_year=body.expiry_year, cvc=body.cvc, customer_id=body.customer_id)
    except VelocityLimited as limited:
        wait = limited.retry_after_seconds
        raise PAYMENT_VELOCITY(str(limited), headers={"Retry-After": str(wait)}, retry_after_seconds=wait) from limited
    return PaymentMethodOut(token=card.token, brand=card.brand, last4=card.last4)


@router.post(
    "/charges", status_code=status.HTTP_201_CREATED, response_model=ChargeOut,
    summary="Charge an order once (for orders); repeats answer from the recorded payment",
    description="The payment is recorded PENDING before the processor is called, and every call for the "
                "order uses the Idempotency-Key of that first request. A PENDING payment (an earlier "
                "outcome unknown) is completed by repeating the request.",
    responses={
        200: {"model": ChargeOut, "description": "The order's payment was already refunded"},
        **problem_responses(
            (IDEMPOTENCY_KEY_REQUIRED, "the Idempotency-Key header is missing or blank"),
            (PAYMENT_DECLINED, "the card was declined (with `decline_code`, `payment_id`, `order_id`); "
                               "`decline_code` `velocity`: payments declined it itself, without the processor, "
                               "as the customer had too many cards declined lately"),
            (PAYMENT_MISMATCH, "another amount or currency is recorded for the order (with `payment_id`)"),
            (IDEMPOTENCY_KEY_REUSED, "the processor holds another charge under the payment's key"),
            (PAYMENT_VOIDED, "the order's payment was refunded before any charge was recorded: never charged"),
            (VALIDATION_ERROR, "the body is not valid"),
            (UNKNOWN_CARD_TOKEN, "the processor does not know the card token"),
            (PROCESSOR_ERROR, "the processor answered unexpectedly (the payment stays PENDING; repeat the request)"),
            (PROCESSOR_UNAVAILABLE, _UNAVAILABLE + " (the payment stays PENDING; repeat the request with the "
                                                   "same body)"),
        ),
    },
)
async def create_charge(
    body: ChargeIn, _: InternalCaller, payments: PaymentsDep, response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> ChargeOut:
    if not idempotency_key or not idempotency_key.strip():
        raise IDEMPOTENCY_KEY_REQUIRED("The Idempotency-Key header is required; reuse it when retrying.")
    annotate_order(body.order_id)
    payment = await payments.charge(
        idempotency_key=idempotency_key.strip(), order_id=body.order_id, customer_id=body.customer_id,
        amount_cents=body.amount_cents, currency=body.currency, card_token=body.card_token,
    )
    if payment.status == PaymentStatus.REFUNDED:
        response.status_code = status.HTTP_200_OK
    return ChargeOut.model_validate(payment)


@router.post(
    "/payments/{order_id}/refund", response_model=PaymentOut,
    summary="Refund an order's payment in full (for orders); idempotent",
    description="REFUNDED for a captured payment. VOIDED when the order has no payment yet (a later charge "
                "for it is refused) or when the processor made no charge for a PENDING one; a PENDING "
                "payment is first settled by asking the processor what it did. Repeats answer the same.",
    responses={
        200: {"model": PaymentOut, "description": "The payment, REFUNDED or VOIDED"},
        **problem_responses(
            (PAYMENT_NOT_CAPTURED, "the payment was declined: nothing to refund"),
            (PROCESSOR_ERROR, "the processor answered unexpectedly"),
            (PROCESSOR_UNAVAILABLE, _UNAVAILABLE + " (nothing settled; repeat the request)"),
        ),
    },
)
async def refund_payment(order_id: str, _: InternalCaller, payments: PaymentsDep) -> PaymentOut:
    return PaymentOut.model_validate(await payments.refund(order_id))


@router.get(
    "/payments/{order_id}", response_model=PaymentOut,
    summary="An order's payment (its customer, an admin or a service)",
    responses=problem_responses((PAYMENT_NOT_FOUND, "no payment for the order, or the caller may not see it")),
)
async def get_payment(order_id: str, viewer: CurrentUser, payments: PaymentsDep) -> PaymentOut:
    """A customer sees that their payment was declined, never why (what a card tester would learn
    from); admins and services see the processor's decline code."""
    payment = PaymentOut.model_validate(await payments.get(viewer, order_id))
    if viewer.role not in ("admin", "service") and payment.decline_code is not None:
        payment.decline_code = GENERIC_DECLINE_CODE
    return payment


@router.get("/payments", response_model=Page[PaymentOut], summary="All payments, oldest first (admin)")
async def list_payments(
    _: AdminUser, paging: Paging, payments: PaymentsDep,
    status_filter: Annotated[PaymentStatus | None, Query(alias="status", description="Only this status")] = None,
) -> Page[PaymentOut]:
    found, total = await payments.list(status=status_filter, limit=paging.limit, offset=paging.offset)
    return Page(items=[PaymentOut.model_validate(p) for p in found], total=total)


@router.get("/ledger/summary", response_model=LedgerSummary,
            summary="Money captured and refunded, and payments by status (admin)")
async def ledger_summary(_: AdminUser, payments: PaymentsDep) -> LedgerSummary:
    return LedgerSummary.model_validate(await payments.ledger())
