"""The checkout saga as plain data: which step follows which, and what each ending means.

No framework and no I/O here, so the rules can be read (and tested) on their own.

    reserve_stock ──ok──▶ charge_payment ──ok──▶ commit_stock ──ok──▶ CONFIRMED
         │ failed              │ declined             │ reservation expired
         ▼                     ▼                      ▼
      REJECTED           release_stock ◀──ok── refund_payment
                               │ ok
                               ▼
                            REJECTED

    cancel (from CONFIRMED): cancel_refund ──ok──▶ cancel_restock ──ok──▶ CANCELLED

Every step is idempotent at the callee (keyed by order id), so a step interrupted by a crash is
simply run again; a technical failure (timeout, 5xx) leaves the step where it is, to be retried.

Past the checkout deadline, a saga still before its pivot (the charge) is compensated instead of
retried: stuck at reserve_stock → release_stock; stuck at charge_payment → refund_payment (payments
voids an unknown or in-flight charge, so a late capture cannot happen) → release_stock → REJECTED.
After the charge, the saga only goes forward: commit_stock is retried until inventory answers.

A refusal no retry can change (a 4xx outside the protocol: the callee says the request itself is
wrong) is not retried: a step before the end is given up at once and compensated like a refusal,
with a reason that says who refused what. A compensation that meets a state it cannot move from,
and that is not what it wanted either (units sold for an order being rejected), ends the saga in
NEEDS_ATTENTION: the order is left for an operator, visibly, instead of being retried for ever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from microshop_chassis.contracts import CURRENCIES, MAX_CHARGE_CENTS, EventType


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    # The saga met a state no step can resolve (see domain docstring): an operator must look.
    NEEDS_ATTENTION = "NEEDS_ATTENTION"


class Step(StrEnum):
    RESERVE_STOCK = "reserve_stock"
    CHARGE_PAYMENT = "charge_payment"
    COMMIT_STOCK = "commit_stock"
    RELEASE_STOCK = "release_stock"  # compensation: give held stock back
    REFUND_PAYMENT = "refund_payment"  # compensation: money taken, stock could not be committed
    CANCEL_REFUND = "cancel_refund"
    CANCEL_RESTOCK = "cancel_restock"
    DONE = "done"


@dataclass(frozen=True)
class StepResult:
    """What a step's call to another service decided. ``ok=False`` is a business refusal
    (out of stock, card declined), never a technical failure. ``stuck`` marks a compensation that
    met a state it cannot move from and that is not what it wanted (``reason`` says which)."""

    ok: bool
    reason: str | None = None
    payment_id: str | None = None
    stuck: bool = False


# What the customer is told of a declined payment, whatever the processor's reason (card testers
# learn nothing from it); admins see the processor's decline code on the payment in payments.
DECLINED_REASON = "The payment was declined."


@dataclass(frozen=True)
class Card:
    """A card as the customer typed it. Only the card processor's token for it is ever stored."""

    number: str = field(repr=False)
    expiry_month: int
    expiry_year: int
    cvc: str = field(repr=False)


@dataclass(frozen=True)
class Checkout:
    """What a customer asks for: lines (sku, quantity) and the card to pay with."""

    lines: tuple[tuple[str, int], ...]
    card: Card

    def canonical(self) -> dict:
        """The request as one canonical document: what tells a replay from another request."""
        return {
            "items": [{"sku": sku, "quantity": quantity} for sku, quantity in self.lines],
            "payment": {"card_number": self.card.number, "expiry_month": self.card.expiry_month,
                        "expiry_year": self.card.expiry_year, "cvc": self.card.cvc},
        }


@dataclass(frozen=True)
class Transition:
    step: Step
    status: OrderStatus
    event: EventType | None = None  # the event this transition publishes, if any


_ON_SUCCESS: dict[Step, Transition] = {
    Step.RESERVE_STOCK: Transition(Step.CHARGE_PAYMENT, OrderStatus.PENDING),
    Step.CHARGE_PAYMENT: Transition(Step.COMMIT_STOCK, OrderStatus.PENDING),
    Step.COMMIT_STOCK: Transition(Step.DONE, OrderStatus.CONFIRMED, EventType.ORDER_CONFIRMED),
    Step.REFUND_PAYMENT: Transition(Step.RELEASE_STOCK, OrderStatus.PENDING),
    Step.RELEASE_STOCK: Transition(Step.DONE, OrderStatus.REJECTED, EventType.ORDER_REJECTED),
    Step.CANCEL_REFUND: Transition(Step.CANCEL_RESTOCK, OrderStatus.CONFIRMED),
    Step.CANCEL_RESTOCK: Transition(Step.DONE, OrderStatus.CANCELLED, EventType.ORDER_CANCELLED),
}

_ON_REFUSAL: dict[Step, Transition] = {
    # Nothing was held when a reservation is refused, so there is nothing to compensate.
    Step.RESERVE_STOCK: Transition(Step.DONE, OrderStatus.REJECTED, EventType.ORDER_REJECTED),
    Step.CHARGE_PAYMENT: Transition(Step.RELEASE_STOCK, OrderStatus.PENDING),
    Step.COMMIT_STOCK: Transition(Step.REFUND_PAYMENT, OrderStatus.PENDING),
}


# Steps given up once the checkout deadline has passed, and where their compensation starts.
_ON_DEADLINE: dict[Step, Transition] = {
    Step.RESERVE_STOCK: Transition(Step.RELEASE_STOCK, OrderStatus.PENDING),
    Step.CHARGE_PAYMENT: Transition(Step.REFUND_PAYMENT, OrderStatus.PENDING),
}

DEADLINE_REASON = "checkout did not complete in time"

# A step refused for good (no retry can change the answer) goes where a refusal of that step goes;
# after the charge too, since a commit that can never succeed must give the money back. Giving up a
# reservation releases it (inventory may have held the units before it refused).
_ON_PERMANENT_ERROR: dict[Step, Transition] = {
    Step.RESERVE_STOCK: Transition(Step.RELEASE_STOCK, OrderStatus.PENDING),
    Step.CHARGE_PAYMENT: Transition(Step.REFUND_PAYMENT, OrderStatus.PENDING),
    Step.COMMIT_STOCK: Transition(Step.REFUND_PAYMENT, OrderStatus.PENDING),
}
# A compensation (or cancellation) step that can neither be done nor retried: nothing more the
# saga can do, so it stops where an operator sees it (no event: no consumer acts on it).
NEEDS_ATTENTION = Transition(Step.DONE, OrderStatus.NEEDS_ATTENTION)
NEEDS_ATTENTION_REASON = "The order needs a check by our staff; nothing more happens until then."


def deadline_transition(step: Step) -> Transition | None:
    """Where a saga past its deadline goes from ``step``; None if it must go on (after the pivot)."""
    return _ON_DEADLINE.get(step)


def give_up_transition(step: Step) -> Transition:
    """Where a saga goes when ``step`` was refused for good: compensation, or NEEDS_ATTENTION for
    a compensation step (nothing is left to compensate it with)."""
    return _ON_PERMANENT_ERROR.get(step, NEEDS_ATTENTION)


def next_transition(step: Step, result: StepResult) -> Transition:
    if result.stuck:
        return NEEDS_ATTENTION
    if result.ok:
        return _ON_SUCCESS[step]
    try:
        return _ON_REFUSAL[step]
    except KeyError:
        # Compensations and cancellation steps cannot be refused by design; if a callee does,
        # that is a bug to surface, not a state to invent.
        raise ValueError(f"step {step} cannot be refused ({result.reason})") from None


FINAL_STATUSES = frozenset({OrderStatus.CONFIRMED, OrderStatus.REJECTED, OrderStatus.CANCELLED})


def can_cancel(status: OrderStatus, step: Step) -> bool:
    """Only a CONFIRMED order can be cancelled; one already being cancelled continues."""
    return status == OrderStatus.CONFIRMED and step in (Step.DONE, Step.CANCEL_REFUND, Step.CANCEL_RESTOCK)


def order_total(lines: list[tuple[int, int]]) -> int:
    """Sum of quantity x unit price, in minor units."""
    return sum(quantity * unit_price for quantity, unit_price in lines)


def chargeable_total(total_cents: int, currency: str) -> int:
    """``total_cents`` if payments can charge it, else ``UnchargeableOrder``: refused before the
    order exists, so no saga waits on a charge payments must refuse."""
    if currency not in CURRENCIES:
        raise UnchargeableOrder(f"Products priced in {currency} cannot be paid for; nothing was ordered.")
    if total_cents <= 0:
        raise UnchargeableOrder("The order's total is zero: it cannot be paid for; nothing was ordered.")
    if total_cents > MAX_CHARGE_CENTS:
        raise UnchargeableOrder(f"The order's total ({total_cents}) exceeds the largest payment accepted "
                                f"({MAX_CHARGE_CENTS}); nothing was ordered.")
    return total_cents


def is_final(status: OrderStatus, step: Step) -> bool:
    """The order reached its outcome and no saga step is left to run."""
    return status in FINAL_STATUSES and step is Step.DONE


# --- what can go wrong, in the domain's terms (api.py answers each with its problem type) ------


class OrderError(Exception):
    """A request orders refuses; nothing was ordered or changed."""


class UnknownProducts(OrderError):
    def __init__(self, skus: list[str]) -> None:
        super().__init__(f"Unknown products: {', '.join(skus)}.")
        self.skus = skus


class InvalidCard(OrderError):
    def __init__(self, detail: str, code: str | None) -> None:
        super().__init__(detail)
        self.code = code


class MixedCurrency(OrderError):
    def __init__(self) -> None:
        super().__init__("All products of one order must share a currency.")


class UnchargeableOrder(OrderError):
    """The order's total (or currency) is one payments refuses to charge."""


class PaymentAttemptsLimited(OrderError):
    """payments refuses the customer's card for now (too many cards tried or declined)."""

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__("Too many payment attempts with different cards; try again later.")
        self.retry_after_seconds = retry_after_seconds


class IdempotencyKeyReused(OrderError):
    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was used for a different request.")


class CheckoutUnavailable(OrderError):
    """inventory or payments could not be asked before the order was created."""

    def __init__(self, cause: str) -> None:
        super().__init__("Checkout is unavailable right now; nothing was ordered. Try again shortly.")
        self.cause = cause


class OrderNotFound(OrderError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"No order {order_id}.")


class OrderNotCancellable(OrderError):
    def __init__(self, status: str) -> None:
        super().__init__(f"Only a CONFIRMED order can be cancelled; this one is {status}.")
        self.order_status = status
