"""Adapters to the two services the saga calls. They turn HTTP answers into saga terms:

- a business decision (held, out of stock, captured, declined) → ``StepResult``;
- a technical failure (unreachable, timeout, 5xx, anything unexpected) → ``DownstreamError``:
  the outcome is unknown, the step stays where it is and is retried with the same key later.

Every call is keyed by the order id at the callee, so every one is safe to repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

from microshop_chassis.errors import Problem
from microshop_chassis.http_client import Reply, ServiceClient, ServiceUnavailable

from .domain import StepResult
from .schemas import CardIn


class DownstreamError(Exception):
    """A call failed for a technical reason; its outcome is unknown."""


def _problem_type(reply: Reply) -> str:
    body = reply.body if isinstance(reply.body, dict) else {}
    return str(body.get("type", "")).rsplit("/", 1)[-1]


def _unexpected(target: str, reply: Reply) -> DownstreamError:
    detail = reply.body.get("detail") if isinstance(reply.body, dict) else None
    return DownstreamError(f"{target} answered {reply.status}: {detail or _problem_type(reply) or 'no detail'}")


# Before the order exists a customer is waiting, and retries with the same Idempotency-Key anyway:
# one quick retry here, so a callee that is down fails the checkout fast (the saga's own calls,
# in the background, keep the client's full retries).
CUSTOMER_WAITING = {"retries": 1}


async def _call(client: ServiceClient, method: str, path: str, **kwargs) -> Reply:
    try:
        return await client.request(method, path, idempotent=True, **kwargs)
    except ServiceUnavailable as exc:
        raise DownstreamError(str(exc)) from exc


@dataclass(frozen=True)
class Price:
    unit_price_cents: int
    currency: str


class InventoryClient:
    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def prices(self, skus: list[str]) -> dict[str, Price]:
        reply = await _call(self.client, "GET", "/products", params=[("sku", s) for s in skus] + [("limit", "1000")],
                            **CUSTOMER_WAITING)
        if reply.status != 200:
            raise _unexpected("inventory", reply)
        found = {p["sku"]: Price(p["price_cents"], p["currency"]) for p in reply.body["items"]}
        missing = sorted(set(skus) - set(found))
        if missing:
            raise Problem(422, f"Unknown products: {', '.join(missing)}.", type="unknown-sku", skus=missing)
        return found

    async def reserve(self, order_id: str, lines: list[tuple[str, int]]) -> StepResult:
        reply = await _call(
            self.client, "PUT", f"/reservations/{order_id}",
            json_body={"items": [{"sku": sku, "quantity": quantity} for sku, quantity in lines]},
        )
        if reply.status in (200, 201):
            status = reply.body["status"]
            if status in ("HELD", "COMMITTED"):
                return StepResult(ok=True)
            return StepResult(ok=False, reason=f"stock reservation {status.lower()}")
        kind = _problem_type(reply)
        if reply.status == 409 and kind == "out-of-stock":
            return StepResult(ok=False, reason=f"out of stock: {', '.join(reply.body.get('skus', []))}")
        if reply.status in (409, 422) and kind in ("reservation-closed", "unknown-sku", "reservation-mismatch"):
            return StepResult(ok=False, reason=reply.body.get("detail") or kind)
        raise _unexpected("inventory", reply)

    async def commit(self, order_id: str) -> StepResult:
        reply = await _call(self.client, "POST", f"/reservations/{order_id}/commit")
        if reply.status == 200:
            return StepResult(ok=True)
        if reply.status == 409 and _problem_type(reply) == "reservation-closed":
            return StepResult(ok=False, reason="stock reservation expired before it was committed")
        raise _unexpected("inventory", reply)

    async def release(self, order_id: str) -> StepResult:
        reply = await _call(self.client, "POST", f"/reservations/{order_id}/release")
        if reply.status == 200:
            return StepResult(ok=True)
        raise _unexpected("inventory", reply)

    async def restock(self, order_id: str) -> StepResult:
        reply = await _call(self.client, "POST", f"/reservations/{order_id}/restock")
        if reply.status == 200:
            return StepResult(ok=True)
        raise _unexpected("inventory", reply)


@dataclass(frozen=True)
class CardToken:
    token: str
    brand: str
    last4: str


class PaymentsClient:
    def __init__(self, client: ServiceClient, timeout: float) -> None:
        self.client = client
        self.timeout = timeout

    async def tokenize(self, card: CardIn) -> CardToken:
        reply = await _call(self.client, "POST", "/payment-methods", json_body=card.model_dump(), **CUSTOMER_WAITING)
        if reply.status == 201:
            return CardToken(reply.body["token"], reply.body["brand"], reply.body["last4"])
        if reply.status == 422:
            raise Problem(422, reply.body.get("detail", "The card is not valid."), type="invalid-card",
                          code=reply.body.get("code"))
        raise _unexpected("payments", reply)

    async def charge(self, *, order_id: str, customer_id: str, amount_cents: int, currency: str,
                     card_token: str) -> StepResult:
        reply = await _call(
            self.client, "POST", "/charges",
            headers={"Idempotency-Key": f"order-{order_id}"},
            json_body={"order_id": order_id, "customer_id": customer_id, "amount_cents": amount_cents,
                       "currency": currency, "card_token": card_token},
            timeout=self.timeout,
        )
        if reply.status in (200, 201):
            return StepResult(ok=True, payment_id=reply.body["id"])
        if reply.status == 402:
            return StepResult(ok=False, reason=f"payment declined: {reply.body.get('decline_code', 'declined')}",
                              payment_id=reply.body.get("payment_id"))
        if reply.status == 409 and _problem_type(reply) == "payment-voided":
            # The order's payment was voided by a compensation (deadline): it can never be captured.
            return StepResult(ok=False, reason="payment voided")
        raise _unexpected("payments", reply)

    async def refund(self, order_id: str) -> StepResult:
        reply = await _call(self.client, "POST", f"/payments/{order_id}/refund", timeout=self.timeout)
        # 200 covers a refund and a void (payments records a tombstone when it has no payment yet,
        # and settles an unknown charge with the card processor first). No payment (older
        # payments) or a declined one means nothing was taken: the compensation is complete.
        if reply.status == 200 or (reply.status in (404, 409) and _problem_type(reply) in
                                   ("payment-not-found", "payment-not-captured")):
            return StepResult(ok=True)
        raise _unexpected("payments", reply)
