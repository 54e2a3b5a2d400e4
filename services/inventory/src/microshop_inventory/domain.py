"""Rules about stock and reservations, free of frameworks and storage.

A product's ``on_hand`` counts units not yet sold; ``reserved`` counts the units HELD reservations
keep for their orders; ``available = on_hand - reserved`` is what a new reservation may take.
Two running totals explain ``on_hand``: ``received_units`` (every unit admins ever put in stock,
less write-offs) and ``sold_units`` (units of committed reservations, less restocked ones), so
``on_hand == received_units - sold_units`` always.

A reservation's life::

    HELD --commit--> COMMITTED --restock--> RESTOCKED
      |--release--> RELEASED
      '--expire---> EXPIRED
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Self

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ORDER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
MAX_LINES = 100


class ReservationStatus(StrEnum):
    HELD = "HELD"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"
    RESTOCKED = "RESTOCKED"


# --- what inventory refuses, in its own terms (api.py answers each with its problem type) ---------
# An error's public attributes are the members of its problem body, so nothing else is public.


class InventoryError(Exception):
    """A request inventory refuses; nothing was changed."""


class ProductNotFound(InventoryError):
    def __init__(self, sku: str) -> None:
        super().__init__(f"No product with sku {sku}.")
        self.sku = sku


class StockBelowReserved(InventoryError):
    """On hand may never drop below what HELD reservations keep."""

    def __init__(self, sku: str, reserved: int, on_hand: int) -> None:
        super().__init__(f"{reserved} units of {sku} are reserved; on hand cannot be set to {on_hand}.")
        self.sku = sku
        self.reserved = reserved


class OutOfStock(InventoryError):
    def __init__(self, skus: list[str]) -> None:
        super().__init__(f"Not enough stock for: {', '.join(skus)}.")
        self.skus = skus


class UnknownSkus(InventoryError):
    def __init__(self, skus: list[str]) -> None:
        super().__init__(f"No such product: {', '.join(skus)}.")
        self.skus = skus


class ReservationNotFound(InventoryError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"No reservation for order {order_id}.")
        self.order_id = order_id


class ReservationBusy(InventoryError):
    """The reservation changed under every attempt to step it; the caller may simply retry."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"The reservation for order {order_id} kept changing; try again.")


class ReservationStateError(InventoryError):
    """The reservation's state refuses the request; the body names that state."""

    def __init__(self, detail: str, status: ReservationStatus) -> None:
        super().__init__(detail)
        self.reservation_status = status.value

    @classmethod
    def refusing(cls, order_id: str, status: ReservationStatus, step: str) -> Self:
        return cls(f"The reservation for order {order_id} is {status}; it cannot {step}.", status)


class ReservationClosed(ReservationStateError):
    """RELEASED (perhaps a tombstone) or EXPIRED: it can neither hold nor commit stock."""


class ReservationMismatch(ReservationStateError):
    """The order is already reserved with other items."""


class ReservationCommitted(ReservationStateError):
    """COMMITTED or RESTOCKED: the units were sold, so there is no hold to release."""


class ReservationNotCommitted(ReservationStateError):
    """Only a COMMITTED reservation can be restocked."""


# --- the life of a reservation --------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """One step of the life above, and what it does to each line's product.

    ``on_hand``, ``reserved`` and ``sold`` are the signs applied to a line's quantity (``sold`` to
    ``sold_units``; always ``-on_hand``, so on hand stays received minus sold). A repeat of the step
    (the caller retrying after a lost reply) finds the reservation in one of ``repeat_states`` and
    is answered with it unchanged; any other state is refused with the error ``conflict``.
    """

    name: str
    source: ReservationStatus
    target: ReservationStatus
    on_hand: int
    reserved: int
    sold: int
    repeat_states: frozenset[ReservationStatus]
    conflict: type[ReservationStateError]

    def outcome_for(self, status: ReservationStatus) -> str:
        """``apply``, ``unchanged`` or ``conflict`` for a reservation found in ``status``."""
        if status == self.source:
            return "apply"
        return "unchanged" if status in self.repeat_states else "conflict"

    def refusal(self, order_id: str, status: ReservationStatus) -> ReservationStateError:
        return self.conflict.refusing(order_id, status, self.name)


S = ReservationStatus

# The units are sold: they leave both counts, so ``available`` does not move.
COMMIT = Transition("commit", S.HELD, S.COMMITTED, on_hand=-1, reserved=-1, sold=+1,
                    repeat_states=frozenset({S.COMMITTED, S.RESTOCKED}), conflict=ReservationClosed)
# The hold ends without a sale (the saga compensates): the units are available again.
RELEASE = Transition("release", S.HELD, S.RELEASED, on_hand=0, reserved=-1, sold=0,
                     repeat_states=frozenset({S.RELEASED, S.EXPIRED}), conflict=ReservationCommitted)
# A cancelled order's sold units come back on the shelf.
RESTOCK = Transition("restock", S.COMMITTED, S.RESTOCKED, on_hand=+1, reserved=0, sold=-1,
                     repeat_states=frozenset({S.RESTOCKED}), conflict=ReservationNotCommitted)
# Nobody committed or released in time: the sweeper gives the units back.
EXPIRE = Transition("expire", S.HELD, S.EXPIRED, on_hand=0, reserved=-1, sold=0,
                    repeat_states=frozenset({S.EXPIRED}), conflict=ReservationClosed)


# --- what the use cases answer with ---------------------------------------------------------------


@dataclass(frozen=True)
class ProductInfo:
    """A product's catalog data, as an admin sets it."""

    name: str
    description: str
    price_cents: int
    currency: str


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    description: str
    price_cents: int
    currency: str
    available: int


@dataclass(frozen=True)
class StockLevel:
    sku: str
    on_hand: int
    reserved: int
    received_units: int
    sold_units: int

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


@dataclass(frozen=True)
class StockSummary:
    """Totals over every sku, and reservations counted by state (every state, 0 included)."""

    skus: int
    on_hand: int
    reserved: int
    received_units: int
    sold_units: int
    reservations_by_status: dict[str, int]
    min_available: int | None


@dataclass(frozen=True)
class Reservation:
    order_id: str
    status: ReservationStatus
    quantities: Mapping[str, int]
    expires_at: datetime | None  # None only for a tombstone: it never held anything

    @property
    def lines(self) -> list[tuple[str, int]]:
        """``(sku, quantity)`` by sku."""
        return sorted(self.quantities.items())


def as_quantities(lines: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Reservation lines as ``{sku: quantity}``: the order of lines carries no meaning."""
    return dict(lines)


def same_items(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    return dict(a) == dict(b)


def is_tombstone(status: ReservationStatus, quantities: Mapping[str, int]) -> bool:
    """A release that arrived before its reservation leaves a RELEASED record with no lines, so a
    reserve arriving late (after the saga compensated) holds nothing."""
    return status == S.RELEASED and not quantities


def expiry(now: datetime, ttl_seconds: int) -> datetime:
    return now + timedelta(seconds=ttl_seconds)
