"""The adapter to the outside card processor (PSP): the only code that talks to it.

Every write carries an Idempotency-Key and is retried with that same key on a timeout, a
connection error or a 503, so an unknown outcome is settled by asking again, never by guessing.
Its answers are turned here, once, into results, into domain errors (the processor's business
answers: invalid card, unknown token, key reused) or into the chassis' downstream errors (no
usable answer: ``ProcessorUnavailable``, ``ProcessorError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from microshop_chassis.downstream import ServiceUnavailable, UnexpectedReply
from microshop_chassis.http_client import Reply, ServiceClient

from .domain import IdempotencyKeyReused, InvalidCard, UnknownCardToken

log = structlog.get_logger("microshop.payments.processor")

PROCESSOR = "card-processor"


@dataclass(frozen=True)
class CardToken:
    token: str
    brand: str
    last4: str


@dataclass(frozen=True)
class ChargeResult:
    charge_id: str
    approved: bool
    brand: str | None
    last4: str | None
    decline_code: str | None
    description: str | None = None  # what the charge was for: "order <id>"


class ProcessorUnavailable(ServiceUnavailable):
    """No answer from the processor, even after the retries (unreachable, timed out, circuit open,
    or 502-504): the outcome of the call is unknown. Its message is what payments' caller is told;
    ``reason`` is what happened (logged)."""

    def __init__(self, reason: str) -> None:
        super().__init__(PROCESSOR, reason)

    def __str__(self) -> str:
        return "The card processor is not reachable; retry with the same Idempotency-Key."


class ProcessorError(UnexpectedReply):
    """The processor answered outside its protocol; ``processor_status`` and ``code`` say how."""

    problem_members = ("processor_status", "code")

    def __init__(self, processor_status: int, code: str | None) -> None:
        super().__init__(PROCESSOR, processor_status, code or "no code")
        self.processor_status = processor_status
        self.code = code

    def __str__(self) -> str:
        return f"The card processor answered {self.processor_status} unexpectedly."


class CardProcessor:
    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def tokenize(self, *, number: str, exp_month: int, exp_year: int, cvc: str) -> CardToken:
        # Safe to retry without a key: a lost answer only leaves an unused token at the processor.
        reply = await self._send(
            "POST", "/v1/tokens", json_body={"number": number, "exp_month": exp_month, "exp_year": exp_year,
                                             "cvc": cvc}
        )
        if reply.status == 201:
            return CardToken(token=reply.body["token"], brand=reply.body["brand"], last4=reply.body["last4"])
        if reply.status == 422:
            # The processor's detail says what is wrong, never the number itself.
            raise InvalidCard(f"The card was refused: {_detail(reply)}", _code(reply))
        raise _unexpected(reply)

    async def charge(
        self, *, idempotency_key: str, token: str, amount_cents: int, currency: str, description: str
    ) -> ChargeResult:
        body = {"token": token, "amount_cents": amount_cents, "currency": currency, "description": description}
        reply = await self._send("POST", "/v1/charges", json_body=body, idempotency_key=idempotency_key)
        if reply.status in (201, 402):
            return _charge_result(reply.body)
        code = _code(reply)
        if code == "token_not_found":
            raise UnknownCardToken()
        if code == "idempotency_key_reused":
            raise IdempotencyKeyReused()
        raise _unexpected(reply)

    async def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        """The charge the processor made under this key, or None when it made none (yet).

        How an unknown outcome is settled without repeating the charge: a read, safe to retry.
        """
        reply = await self._send("GET", "/v1/charges", params={"idempotency_key": idempotency_key})
        if reply.status != 200:
            raise _unexpected(reply)
        items = reply.body.get("items", []) if isinstance(reply.body, dict) else []
        return _charge_result(items[0]) if items else None

    async def refund(self, *, idempotency_key: str, charge_id: str) -> str:
        """Refund a charge in full; return the processor's refund id."""
        reply = await self._send("POST", "/v1/refunds", json_body={"charge_id": charge_id},
                                 idempotency_key=idempotency_key)
        if reply.status == 201:
            return reply.body["id"]
        raise _unexpected(reply)

    async def _send(self, method: str, path: str, *, idempotency_key: str | None = None, **kwargs: Any) -> Reply:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        try:
            reply = await self.client.request(method, path, headers=headers, idempotent=True, **kwargs)
        except ServiceUnavailable as exc:
            log.warning("card_processor_unreachable", path=path, reason=exc.reason)
            raise ProcessorUnavailable(exc.reason) from exc
        if reply.status in (502, 503, 504):  # still failing after the client's retries
            log.warning("card_processor_unavailable", path=path, status=reply.status)
            raise ProcessorUnavailable(f"answered {reply.status}")
        return reply


def _charge_result(charge: dict[str, Any]) -> ChargeResult:
    return ChargeResult(
        charge_id=charge["id"],
        approved=charge["status"] == "succeeded",
        brand=charge.get("brand"),
        last4=charge.get("last4"),
        decline_code=charge.get("decline_code"),
        description=charge.get("description"),
    )


def _unexpected(reply: Reply) -> ProcessorError:
    log.error("card_processor_unexpected_answer", status=reply.status, code=_code(reply))
    return ProcessorError(reply.status, _code(reply))


def _code(reply: Reply) -> str | None:
    return reply.body.get("code") if isinstance(reply.body, dict) else None


def _detail(reply: Reply) -> str:
    detail = reply.body.get("detail") if isinstance(reply.body, dict) else None
    return detail if isinstance(detail, str) else "not valid"
