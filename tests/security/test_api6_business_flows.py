"""API6:2023 Unrestricted access to sensitive business flows: card testing. The audit ran 30
stolen cards through checkout from one account in 3 s and read each decline reason. Payment
attempts (different cards, declines) are limited per customer: past the limit checkout answers
429 with Retry-After before the card processor is called; another customer is unaffected; the
customer sees a generic decline reason."""

from __future__ import annotations

import pytest
from microshop_chassis.testing import ApiClient

pytestmark = pytest.mark.asyncio(loop_scope="session")

ATTEMPTS = 30
GENERIC_DECLINE = "The payment was declined."


def luhn_card(serial: int) -> str:
    """A distinct, valid (Luhn) test card number: the stolen cards of the audit were all different."""
    body = f"4000123{serial:08d}"
    total = 0
    for index, digit in enumerate(int(d) for d in reversed(body)):
        doubled = digit * 2 if index % 2 == 0 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return body + str((10 - total % 10) % 10)


def stolen_cards(secured) -> list[str]:
    """The two numbers the card processor declines, then distinct numbers it would approve."""
    return [*secured.declined_cards, *(luhn_card(serial) for serial in range(ATTEMPTS))]


async def processor_charges(secured) -> int:
    stats = await ApiClient(secured.url("card-processor")).get("/_admin/stats")
    return stats.body["charges"]


async def test_card_testing_is_stopped_before_the_processor(secured):
    carol = secured.customers["carol"]
    refused = None
    cards = stolen_cards(secured)
    for number in cards[:ATTEMPTS]:
        card = {**secured.approved_card, "card_number": number}
        reply = await secured.order(carol.token, card=card)
        if reply.status == 429:
            refused = reply
            break
        assert reply.status in (201, 202), reply.body
        if reply.body["status"] == "REJECTED":
            assert reply.body["reason"] == GENERIC_DECLINE, f"the processor's reason leaks: {reply.body['reason']}"
    assert refused is not None, f"{ATTEMPTS} different cards from one customer and no 429"
    secured.assert_problem(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0

    charges_before = await processor_charges(secured)
    again = await secured.order(carol.token, card={**secured.approved_card, "card_number": cards[ATTEMPTS]})
    secured.assert_problem(again, 429)
    assert await processor_charges(secured) == charges_before, "a refused attempt still reached the processor"

    other = await secured.order(secured.customers["bob"].token)
    assert other.status == 201 and other.body["status"] == "CONFIRMED", other.body
