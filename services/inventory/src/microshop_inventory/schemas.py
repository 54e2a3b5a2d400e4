"""What inventory's API takes and answers."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Annotated

from microshop_chassis.contracts import CURRENCIES, MAX_CHARGE_CENTS
from microshop_chassis.schemas import RequestModel
from pydantic import BaseModel, Field, field_validator

from .domain import MAX_LINES, SKU_PATTERN, ReservationStatus

Sku = Annotated[str, Field(pattern=SKU_PATTERN, max_length=64, examples=["MUG-BLUE"])]
# Strict: a count or an amount of money is a JSON integer, never 1.5, "3" or true.
Count = Annotated[int, Field(strict=True, ge=0, le=1_000_000_000)]


class ProductIn(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=5000)
    # Only prices payments can charge: a free product or one above the charge cap would leave its
    # orders PENDING on a refusal no retry can fix.
    price_cents: int = Field(strict=True, gt=0, le=MAX_CHARGE_CENTS,
                             description="Unit price in minor units (cents): 1 up to payments' cap.")
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$",
                          description=f"ISO 4217, one of those payments charges in: {', '.join(sorted(CURRENCIES))}.")

    @field_validator("currency")
    @classmethod
    def chargeable_currency(cls, currency: str) -> str:
        if currency not in CURRENCIES:
            raise ValueError(f"payments charges only in {', '.join(sorted(CURRENCIES))}")
        return currency


class ProductOut(BaseModel):
    sku: str
    name: str
    description: str
    price_cents: int
    currency: str
    available: int = Field(description="Units a new reservation can take: on hand minus reserved.")


class StockIn(RequestModel):
    on_hand: Count


class StockOut(BaseModel):
    sku: str
    on_hand: int = Field(description="Units not yet sold: always received_units - sold_units.")
    reserved: int = Field(description="Units held by HELD reservations.")
    available: int = Field(description="Units a new reservation can take: on hand minus reserved.")
    received_units: int = Field(description="Units ever put in stock by admins: each PUT /stock adds the new "
                                            "on hand minus the old (negative for a write-off).")
    sold_units: int = Field(description="Units of committed reservations, less those restocked after a "
                                        "cancellation.")


class StockSummaryOut(BaseModel):
    """Totals over every sku, for an operator checking stock conservation once the system is quiet
    (then reserved is 0 and no reservation is HELD)."""

    skus: int = Field(description="Number of products.")
    on_hand: int = Field(description="Sum of on_hand.")
    reserved: int = Field(description="Sum of reserved.")
    received_units: int = Field(description="Sum of received_units.")
    sold_units: int = Field(description="Sum of sold_units.")
    reservations_by_status: dict[str, int] = Field(
        description="Number of reservations in each state; every state is listed, 0 included.",
        examples=[{"HELD": 0, "COMMITTED": 12, "RELEASED": 3, "EXPIRED": 1, "RESTOCKED": 2}],
    )
    min_available: int | None = Field(description="The smallest on_hand - reserved over all skus; "
                                                  "null when there are no products.")


class ReservationLineSchema(RequestModel):
    sku: Sku
    quantity: Annotated[int, Field(strict=True, ge=1, le=1_000_000)]


class ReservationIn(RequestModel):
    items: list[ReservationLineSchema] = Field(min_length=1, max_length=MAX_LINES)

    @field_validator("items")
    @classmethod
    def skus_are_unique(cls, items: list[ReservationLineSchema]) -> list[ReservationLineSchema]:
        counts = Counter(line.sku for line in items)
        repeated = sorted(sku for sku, count in counts.items() if count > 1)
        if repeated:
            raise ValueError(f"each sku may appear once; repeated: {', '.join(repeated)}")
        return items


class ReservationOut(BaseModel):
    order_id: str
    status: ReservationStatus
    items: list[ReservationLineSchema]
    expires_at: datetime | None = Field(description="When a HELD reservation gives its units back; "
                                                    "null for a release recorded before any reserve.")

