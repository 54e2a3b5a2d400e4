from datetime import datetime

from microshop_chassis.schemas import RequestModel
from pydantic import BaseModel, Field, field_validator


class LineIn(RequestModel):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1000)


class CardIn(RequestModel):
    card_number: str = Field(min_length=12, max_length=23, repr=False)
    expiry_month: int = Field(ge=1, le=12)
    expiry_year: int = Field(ge=2000, le=2100)
    cvc: str = Field(pattern=r"^[0-9]{3,4}$", repr=False)


class OrderCreate(RequestModel):
    items: list[LineIn] = Field(min_length=1, max_length=100)
    payment: CardIn

    @field_validator("items")
    @classmethod
    def skus_unique(cls, items: list[LineIn]) -> list[LineIn]:
        skus = [line.sku for line in items]
        if len(skus) != len(set(skus)):
            raise ValueError("each sku may appear once; put the total in quantity")
        return items


class LineOut(BaseModel):
    sku: str
    quantity: int
    unit_price_cents: int


class OrderOut(BaseModel):
    id: str
    status: str
    reason: str | None = None
    total_cents: int
    currency: str
    items: list[LineOut]
    customer_id: str
    payment_id: str | None = None
    card_last4: str
    created_at: datetime
    updated_at: datetime


class SagaOut(BaseModel):
    order_id: str
    status: str
    step: str
    attempts: int
    last_error: str | None
    lease_until: datetime
