"""payments' HTTP API: translates HTTP to use cases and back, nothing more."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from microshop_chassis.auth import AdminUser, CurrentUser, ServiceCaller
from microshop_chassis.errors import Problem
from microshop_chassis.pagination import Page, Paging

from . import service
from .domain import PaymentStatus, may_view
from .models import Payment
from .schemas import (
    ChargeIn,
    ChargeOut,
    LedgerSummary,
    PaymentMethodIn,
    PaymentMethodOut,
    PaymentOut,
    ProblemDetails,
)

router = APIRouter(tags=["payments"])


def _problems(**described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for problem+json answers, keyed by status code."""
    return {int(code[1:]): {"model": ProblemDetails, "description": text} for code, text in described.items()}


_UNAVAILABLE = "processor-unavailable: the card processor did not answer, even after retries"
_VOIDED = "payment-voided (the order's payment was refunded before any charge was recorded: never charged)"


@router.post(
    "/payment-methods", status_code=status.HTTP_201_CREATED, response_model=PaymentMethodOut,
    summary="Tokenize a card at the processor (for orders); stores nothing",
    responses=_problems(_422="invalid-card (with the processor's `code`) or validation-error",
                        _503=_UNAVAILABLE),
)
async def create_payment_method(body: PaymentMethodIn, _: ServiceCaller, request: Request) -> PaymentMethodOut:
    card = await request.app.state.processor.tokenize(
        number=body.card_number, exp_month=body.expiry_month, exp_year=body.expiry_year, cvc=body.cvc
    )
    return PaymentMethodOut(token=card.token, brand=card.brand, last4=card.last4)


@router.post(
    "/charges", status_code=status.HTTP_201_CREATED, response_model=ChargeOut,
    summary="Charge an order once (for orders); repeats answer from the recorded payment",
    description="The payment is recorded PENDING before the processor is called, and every call for the "
                "order uses the Idempotency-Key of that first request. A PENDING payment (an earlier "
                "outcome unknown) is completed by repeating the request.",
    responses={
        200: {"model": ChargeOut, "description": "The order's payment was already refunded"},
        **_problems(
            _400="idempotency-key-required", _402="payment-declined (with `decline_code`, `payment_id`)",
            _409="payment-mismatch (another amount or currency is recorded for the order), "
                 f"idempotency-key-reused, or {_VOIDED}",
            _422="validation-error or unknown-card-token",
            _502="processor-error (the payment stays PENDING; repeat the request)",
            _503=_UNAVAILABLE + " (the payment stays PENDING; repeat the request with the same body)",
        ),
    },
)
async def create_charge(
    body: ChargeIn, _: ServiceCaller, request: Request, response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> ChargeOut:
    if not idempotency_key or not idempotency_key.strip():
        raise Problem(400, "The Idempotency-Key header is required; reuse it when retrying.",
                      type="idempotency-key-required")
    payment = await service.charge(
        request.app.state.db, request.app.state.processor, idempotency_key=idempotency_key.strip(),
        order_id=body.order_id, customer_id=body.customer_id, amount_cents=body.amount_cents,
        currency=body.currency, card_token=body.card_token,
    )
    if payment.status == PaymentStatus.DECLINED:
        raise Problem(402, f"The card was declined ({payment.decline_code}).", type="payment-declined",
                      decline_code=payment.decline_code, payment_id=payment.id, order_id=payment.order_id)
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
        **_problems(_409="payment-not-captured (the payment was declined)", _502="processor-error",
                    _503=_UNAVAILABLE + " (nothing settled; repeat the request)"),
    },
)
async def refund_payment(order_id: str, _: ServiceCaller, request: Request) -> PaymentOut:
    payment = await service.refund(request.app.state.db, request.app.state.processor, order_id)
    return PaymentOut.model_validate(payment)


@router.get(
    "/payments/{order_id}", response_model=PaymentOut,
    summary="An order's payment (its customer, an admin or a service)",
    responses=_problems(_404="payment-not-found (also when the caller may not see it)"),
)
async def get_payment(order_id: str, principal: CurrentUser, request: Request) -> PaymentOut:
    payment: Payment | None = await service.find_payment(request.app.state.db, order_id)
    # Someone else's payment answers like a missing one: its existence is not revealed.
    if payment is None or not may_view(payment.customer_id, principal.id, principal.role):
        raise Problem(404, f"No payment for order {order_id}.", type="payment-not-found")
    return PaymentOut.model_validate(payment)


@router.get("/payments", response_model=Page[PaymentOut], summary="All payments, oldest first (admin)")
async def list_payments(
    _: AdminUser, paging: Paging, request: Request,
    status_filter: Annotated[PaymentStatus | None, Query(alias="status", description="Only this status")] = None,
) -> Page[PaymentOut]:
    payments, total = await service.list_payments(
        request.app.state.db, status=status_filter, limit=paging.limit, offset=paging.offset
    )
    return Page(items=[PaymentOut.model_validate(p) for p in payments], total=total)


@router.get("/ledger/summary", response_model=LedgerSummary,
            summary="Money captured and refunded, and payments by status (admin)")
async def ledger_summary(_: AdminUser, request: Request) -> LedgerSummary:
    return LedgerSummary(**await service.ledger_summary(request.app.state.db))
