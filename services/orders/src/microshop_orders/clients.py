"""Adapters to the two services orders calls. They turn answers into the saga's terms:

- a business decision (held, out of stock, captured, declined) -> ``StepResult``, judged by the
  problem types declared in contracts/problems.json (``microshop_chassis.contracts``);
- a technical failure (unreachable, timeout, 5xx, an answer outside the protocol) -> the chassis'
  ``DownstreamError`` family: the outcome is unknown, the step stays where it is and is retried
  with the same key later; except an ``UnexpectedReply`` that is ``permanent`` (a 4xx outside the
  protocol), which the saga gives up at once (saga.py).

Every call is keyed by the order id at the callee, so every one is safe to repeat.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from microshop_chassis.contracts import (
    INVALID_CARD,
    OUT_OF_STOCK,
    PAYMENT_DECLINED,
    PAYMENT_NOT_CAPTURED,
    PAYMENT_NOT_FOUND,
    PAYMENT_VELOCITY,
    PAYMENT_VOIDED,
    RESERVATION_CLOSED,
    RESERVATION_COMMITTED,
    RESERVATION_MISMATCH,
    RESERVATION_NOT_COMMITTED,
    UNKNOWN_SKU,
)
from microshop_chassis.http_client import Reply, ServiceClient

from .domain import DECLINED_REASON, Card, InvalidCard, PaymentAttemptsLimited, StepResult, UnknownProducts

# Before the order exists a customer is waiting, and retries with the same Idempotency-Key anyway:
# one quick retry here, so a callee that is down fails the checkout fast (the saga's own calls,
# in the background, keep the client's full retries).
CUSTOMER_WAITING = {"retries": 1}


@dataclass(frozen=True)
class Price:
    unit_price_cents: int
    currency: str


@dataclass(frozen=True)
class CardToken:
    token: str
    brand: str
    last4: str


class PriceQuotes:
    """Prices as inventory quoted them, reused for ``valid_seconds``: at a checkout's rate, asking
    inventory for the same few products' prices on every checkout is a request (~8% of a
    checkout's CPU, docs/performance.md) that nearly always gets the answer it got a moment ago.

    The trade: a price changed in the catalog applies to checkouts ``valid_seconds`` later at the
    latest (an order is always charged the price it records). Only prices found are kept, so an
    unknown sku is asked about (and refused) every time, and a new product is seen at once.
    ``valid_seconds=0`` asks inventory on every checkout. Written here rather than with a cache
    library: the lookup is of several keys at once, and only the missing ones are fetched."""

    def __init__(self, fetch: Callable[[list[str]], Awaitable[dict[str, Price]]], *, valid_seconds: float,
                 max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self.valid_seconds = valid_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._quotes: dict[str, tuple[float, Price]] = {}  # sku -> (good until, price)

    async def prices(self, skus: list[str]) -> dict[str, Price]:
        if self.valid_seconds <= 0:
            return await self._fetch(skus)
        now = self._clock()
        found: dict[str, Price] = {}
        for sku in skus:
            quote = self._quotes.get(sku)
            if quote is not None and quote[0] > now:
                found[sku] = quote[1]
        missing = [sku for sku in skus if sku not in found]
        if missing:
            fetched = await self._fetch(missing)
            self._keep(fetched, self._clock() + self.valid_seconds)
            found.update(fetched)
        return found

    def __len__(self) -> int:
        return len(self._quotes)

    def _keep(self, prices: dict[str, Price], until: float) -> None:
        if len(self._quotes) + len(prices) > self.max_entries:
            now = self._clock()
            self._quotes = {sku: quote for sku, quote in self._quotes.items() if quote[0] > now}
            if len(self._quotes) + len(prices) > self.max_entries:
                self._quotes.clear()  # a catalog larger than the cache: start over rather than grow
        for sku, price in prices.items():
            self._quotes[sku] = (until, price)


class InventoryClient:
    def __init__(self, client: ServiceClient, *, price_quote_seconds: float = 0.0) -> None:
        self.client = client
        self._quotes = PriceQuotes(self._ask_prices, valid_seconds=price_quote_seconds)

    async def prices(self, skus: list[str]) -> dict[str, Price]:
        """The price of each sku (a quote up to ``price_quote_seconds`` old); ``UnknownProducts``
        if the catalog lacks any."""
        return await self._quotes.prices(skus)

    async def _ask_prices(self, skus: list[str]) -> dict[str, Price]:
        reply = await self.client.get("/products", params=[("sku", s) for s in skus] + [("limit", "1000")],
                                      **CUSTOMER_WAITING)
        if reply.status != 200:
            raise reply.unexpected("inventory")
        found = {p["sku"]: Price(p["price_cents"], p["currency"]) for p in reply.body["items"]}
        missing = sorted(set(skus) - set(found))
        if missing:
            raise UnknownProducts(missing)
        return found

    async def reserve(self, order_id: str, lines: list[tuple[str, int]]) -> StepResult:
        reply = await self.client.put(
            f"/reservations/{order_id}",
            json_body={"items": [{"sku": sku, "quantity": quantity} for sku, quantity in lines]},
        )
        if reply.status in (200, 201):
            status = reply.body["status"]
            if status in ("HELD", "COMMITTED"):
                return StepResult(ok=True)
            return StepResult(ok=False, reason=f"stock reservation {status.lower()}")
        if reply.is_problem(OUT_OF_STOCK):
            return StepResult(ok=False, reason=f"out of stock: {', '.join(reply.body.get('skus', []))}")
        if reply.is_problem(RESERVATION_CLOSED, UNKNOWN_SKU, RESERVATION_MISMATCH):
            return StepResult(ok=False, reason=reply.body.get("detail") or reply.body["type"])
        raise reply.unexpected("inventory")

    async def commit(self, order_id: str) -> StepResult:
        reply = await self.client.post(f"/reservations/{order_id}/commit", idempotent=True)
        if reply.status == 200:
            return StepResult(ok=True)
        if reply.is_problem(RESERVATION_CLOSED):
            return StepResult(ok=False, reason="stock reservation expired before it was committed")
        raise reply.unexpected("inventory")

    async def release(self, order_id: str) -> StepResult:
        reply = await self.client.post(f"/reservations/{order_id}/release", idempotent=True)
        if reply.status == 200:
            return StepResult(ok=True)
        if reply.is_problem(RESERVATION_COMMITTED):
            # RESTOCKED: the units are back on the shelf, as the release wanted. COMMITTED: they are
            # sold to an order being rejected; no step of the saga can take that back.
            return _settled_or_stuck(reply, wanted=("RESTOCKED",), action="release the stock")
        raise reply.unexpected("inventory")

    async def restock(self, order_id: str) -> StepResult:
        reply = await self.client.post(f"/reservations/{order_id}/restock", idempotent=True)
        if reply.status == 200:
            return StepResult(ok=True)
        if reply.is_problem(RESERVATION_NOT_COMMITTED):
            # RELEASED or EXPIRED: no unit is sold for the order, as the restock wanted. HELD: a
            # cancelled order holding stock is a state the saga does not know how to end.
            return _settled_or_stuck(reply, wanted=("RELEASED", "EXPIRED"), action="restock")
        raise reply.unexpected("inventory")


def _settled_or_stuck(reply: Reply, *, wanted: tuple[str, ...], action: str) -> StepResult:
    found = reply.body.get("reservation_status")
    if found in wanted:
        return StepResult(ok=True)
    return StepResult(ok=False, stuck=True, reason=f"inventory could not {action}: the reservation is {found}")


class PaymentsClient:
    def __init__(self, client: ServiceClient, timeout: float) -> None:
        self.client = client
        self.timeout = timeout

    async def tokenize(self, card: Card, customer_id: str) -> CardToken:
        """The processor's token for the card; ``InvalidCard`` if it refuses the card,
        ``PaymentAttemptsLimited`` if payments' velocity limits refuse the customer's attempt."""
        reply = await self.client.post(
            "/payment-methods", idempotent=True, **CUSTOMER_WAITING,
            json_body={"card_number": card.number, "expiry_month": card.expiry_month,
                       "expiry_year": card.expiry_year, "cvc": card.cvc, "customer_id": customer_id},
        )
        if reply.status == 201:
            return CardToken(reply.body["token"], reply.body["brand"], reply.body["last4"])
        if reply.is_problem(INVALID_CARD):
            raise InvalidCard(reply.body.get("detail", "The card is not valid."), reply.body.get("code"))
        if reply.is_problem(PAYMENT_VELOCITY):
            raise PaymentAttemptsLimited(_retry_after(reply))
        raise reply.unexpected("payments")

    async def charge(self, *, order_id: str, customer_id: str, amount_cents: int, currency: str,
                     card_token: str) -> StepResult:
        reply = await self.client.post(
            "/charges", idempotent=True, timeout=self.timeout,
            headers={"Idempotency-Key": f"order-{order_id}"},
            json_body={"order_id": order_id, "customer_id": customer_id, "amount_cents": amount_cents,
                       "currency": currency, "card_token": card_token},
        )
        if reply.status in (200, 201):
            return StepResult(ok=True, payment_id=reply.body["id"])
        if reply.is_problem(PAYMENT_DECLINED):
            # The processor's decline code stays with the payment (admins see it there).
            return StepResult(ok=False, reason=DECLINED_REASON, payment_id=reply.body.get("payment_id"))
        if reply.is_problem(PAYMENT_VOIDED):
            # The order's payment was voided by a compensation (deadline): it can never be captured.
            return StepResult(ok=False, reason="payment voided")
        raise reply.unexpected("payments")

    async def refund(self, order_id: str) -> StepResult:
        reply = await self.client.post(f"/payments/{order_id}/refund", idempotent=True, timeout=self.timeout)
        # 200 covers a refund and a void (payments records a tombstone when it has no payment yet,
        # and settles an unknown charge with the card processor first). No payment, or a declined
        # one, means nothing was taken: the compensation is complete.
        if reply.status == 200 or reply.is_problem(PAYMENT_NOT_FOUND, PAYMENT_NOT_CAPTURED):
            return StepResult(ok=True)
        raise reply.unexpected("payments")


def _retry_after(reply: Reply) -> int:
    """Seconds from the Retry-After header (or the problem's member); at least 1."""
    for value in (reply.headers.get("Retry-After"), reply.body.get("retry_after_seconds")):
        try:
            return max(1, int(value))
        except (TypeError, ValueError):
            continue
    return 60
