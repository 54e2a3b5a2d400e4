"""The card-processor adapter: each answer of the processor becomes a result, a domain error (its
business answers) or one of the chassis' downstream errors (no usable answer)."""

import pytest
from microshop_chassis.downstream import ServiceUnavailable, UnexpectedReply
from microshop_chassis.http_client import Reply
from microshop_payments.domain import IdempotencyKeyReused, InvalidCard, UnknownCardToken
from microshop_payments.processor import CardProcessor, ProcessorError, ProcessorUnavailable
from multidict import CIMultiDict

CHARGE = {"id": "ch_1", "status": "succeeded", "decline_code": None, "brand": "visa", "last4": "4242",
          "description": "order o-1"}


class Answering:
    """A ServiceClient that answers every call with one reply (or fails it); it records the calls."""

    def __init__(self, status: int = 200, body: object = None, *, fail: bool = False) -> None:
        self.reply = Reply(status, body, CIMultiDict({"Content-Type": "application/json"}))
        self.fail = fail
        self.calls: list[tuple[str, str, dict]] = []

    async def request(self, method: str, path: str, **kwargs) -> Reply:
        self.calls.append((method, path, kwargs))
        if self.fail:
            raise ServiceUnavailable("card-processor", "connection refused")
        return self.reply


def processor(*args, **kwargs) -> CardProcessor:
    return CardProcessor(Answering(*args, **kwargs))


async def charge(adapter: CardProcessor):
    return await adapter.charge(idempotency_key="k-1", token="tok_1", amount_cents=100, currency="USD",
                                description="order o-1")


async def test_answers_become_results():
    card = await processor(201, {"token": "tok_1", "brand": "visa", "last4": "4242"}).tokenize(
        number="4242424242424242", exp_month=12, exp_year=2030, cvc="123")
    assert (card.token, card.brand, card.last4) == ("tok_1", "visa", "4242")
    approved = await charge(processor(201, CHARGE))
    assert approved.approved and approved.charge_id == "ch_1" and approved.description == "order o-1"
    declined = await charge(processor(402, {**CHARGE, "status": "declined", "decline_code": "card_declined"}))
    assert not declined.approved and declined.decline_code == "card_declined"
    assert await processor(200, {"items": []}).find_charge("k-1") is None
    assert (await processor(200, {"items": [CHARGE]}).find_charge("k-1")).charge_id == "ch_1"
    assert await processor(201, {"id": "re_1"}).refund(idempotency_key="refund-o-1", charge_id="ch_1") == "re_1"


async def test_every_write_carries_its_key_and_is_safe_to_retry():
    client = Answering(201, CHARGE)
    await charge(CardProcessor(client))
    [(method, path, kwargs)] = client.calls
    assert (method, path) == ("POST", "/v1/charges")
    assert kwargs["headers"] == {"Idempotency-Key": "k-1"} and kwargs["idempotent"] is True


async def test_business_answers_become_domain_errors():
    with pytest.raises(InvalidCard) as invalid:
        await processor(422, {"code": "expired_card", "detail": "the card has expired"}).tokenize(
            number="4242424242424242", exp_month=1, exp_year=2020, cvc="123")
    assert invalid.value.code == "expired_card" and "expired" in str(invalid.value)
    with pytest.raises(UnknownCardToken):
        await charge(processor(404, {"code": "token_not_found"}))
    with pytest.raises(IdempotencyKeyReused):
        await charge(processor(422, {"code": "idempotency_key_reused"}))


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_no_answer_after_the_retries_is_processor_unavailable(status):
    with pytest.raises(ProcessorUnavailable) as unavailable:
        await charge(processor(status, {}))
    assert isinstance(unavailable.value, ServiceUnavailable)
    with pytest.raises(ProcessorUnavailable):
        await processor(fail=True).find_charge("k-1")


async def test_an_answer_outside_the_protocol_is_a_processor_error():
    with pytest.raises(ProcessorError) as unexpected:
        await processor(409, {"code": "charge_already_refunded"}).refund(idempotency_key="k", charge_id="ch_1")
    assert isinstance(unexpected.value, UnexpectedReply)
    assert (unexpected.value.processor_status, unexpected.value.code) == (409, "charge_already_refunded")
    with pytest.raises(ProcessorError):
        await charge(processor(500, "not json"))
