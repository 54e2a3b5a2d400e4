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

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ORDER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
MAX_LINES = 100


class ReservationStatus(StrEnum):
    HELD = "HELD"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"
    RESTOCKED = "RESTOCKED"


@dataclass(frozen=True)
class Transition:
    """One step of the life above, and what it does to each line's product.

    ``on_hand``, ``reserved`` and ``sold`` are the signs applied to a line's quantity (``sold`` to
    ``sold_units``; always ``-on_hand``, so on hand stays received minus sold). A repeat of the step
    (the caller retrying after a lost reply) finds the reservation in one of ``repeat_states`` and
    is answered with it unchanged; any other state is a conflict of kind ``conflict``.
    """

    name: str
    source: ReservationStatus
    target: ReservationStatus
    on_hand: int
    reserved: int
    sold: int
    repeat_states: frozenset[ReservationStatus]
    conflict: str

    def outcome_for(self, status: ReservationStatus) -> str:
        """``apply``, ``unchanged`` or ``conflict`` for a reservation found in ``status``."""
        if status == self.source:
            return "apply"
        return "unchanged" if status in self.repeat_states else "conflict"


S = ReservationStatus

# The units are sold: they leave both counts, so ``available`` does not move.
COMMIT = Transition("commit", S.HELD, S.COMMITTED, on_hand=-1, reserved=-1, sold=+1,
                    repeat_states=frozenset({S.COMMITTED, S.RESTOCKED}), conflict="reservation-closed")
# The hold ends without a sale (the saga compensates): the units are available again.
RELEASE = Transition("release", S.HELD, S.RELEASED, on_hand=0, reserved=-1, sold=0,
                     repeat_states=frozenset({S.RELEASED, S.EXPIRED}), conflict="reservation-committed")
# A cancelled order's sold units come back on the shelf.
RESTOCK = Transition("restock", S.COMMITTED, S.RESTOCKED, on_hand=+1, reserved=0, sold=-1,
                     repeat_states=frozenset({S.RESTOCKED}), conflict="reservation-not-committed")
# Nobody committed or released in time: the sweeper gives the units back.
EXPIRE = Transition("expire", S.HELD, S.EXPIRED, on_hand=0, reserved=-1, sold=0,
                    repeat_states=frozenset({S.EXPIRED}), conflict="reservation-closed")


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
