"""Request and response bodies of payments' HTTP API."""

from datetime import datetime
from typing import Literal

from microshop_chassis.schemas import RequestModel
from pydantic import BaseModel, ConfigDict, Field

from .domain import CURRENCY, MAX_AMOUNT_CENTS, PaymentStatus


class PaymentMethodIn(RequestModel):
    card_number: str = Field(min_length=1, max_length=30, description="Digits, spaces allowed; never stored.")
    expiry_month: int = Field(description="1..12")
    expiry_year: int = Field(description="Four digits")
    cvc: str = Field(min_length=1, max_length=8, description="Never stored.")
    customer_id: str | None = Field(None, min_length=1, max_length=100,
                                    description="The customer the card is for (orders always sends it): the "
                                                "velocity limits are checked for them before the processor is called.")


class PaymentMethodOut(BaseModel):
    token: str = Field(description="The processor's token for the card: what /charges takes.")
    brand: str
    last4: str


class ChargeIn(RequestModel):
    order_id: str = Field(min_length=1, max_length=64)
    customer_id: str = Field(min_length=1, max_length=100)
    amount_cents: int = Field(gt=0, le=MAX_AMOUNT_CENTS, strict=True, description="Integer minor units.")
    currency: Literal["USD"] = Field(description=f"Always {CURRENCY}.")
    card_token: str = Field(min_length=1, max_length=255, description="From POST /payment-methods.")


class ChargeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    order_id: str
    customer_id: str
    amount_cents: int
    currency: str
    status: PaymentStatus = Field(description="PENDING (processor outcome not known yet), CAPTURED, DECLINED, "
                                              "REFUNDED or VOIDED (refunded before any charge; never charged)")
    card_brand: str | None
    card_last4: str | None
    created_at: datetime


class PaymentOut(ChargeOut):
    decline_code: str | None
    updated_at: datetime


class LedgerSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    captured_cents: int = Field(description="Sum of all captures.")
    refunded_cents: int = Field(description="Sum of all refunds, as a positive number.")
    net_cents: int = Field(description="captured_cents - refunded_cents: money the shop holds.")
    captures: int
    refunds: int
    payments_by_status: dict[str, int] = Field(
        description="Number of payments in each status (every status listed, 0 included). Once no charge "
                    "is in flight, PENDING should be 0: a PENDING payment is an outcome not yet settled.")

