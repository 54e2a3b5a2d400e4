"""Card testing (issue 8 item 6): many stolen cards tried from one account. payments over real HTTP
and a real database, against a stand-in processor that knows every card (the simulator declines only
two numbers) and counts the calls it gets."""

from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from microshop_chassis.testing import ApiClient, RunningApp
from microshop_payments.bootstrap import build

from .test_api import assert_problem, charge, charge_body, new_id


def card_number(n: int, *, approved: bool = False) -> str:
    """A different card for each ``n`` (its last four digits differ); "42..." cards are approved."""
    return ("4242" if approved else "4000") + f"{n:012d}"


@dataclass
class CountingProcessor:
    """Approves cards starting 42, declines the others as stolen; counts what it is asked."""

    tokens: int = 0
    charges: int = 0

    async def tokenize(self, request: web.Request) -> web.Response:
        self.tokens += 1
        number = (await request.json())["number"]
        return web.json_response({"token": f"tok_{number}", "brand": "visa", "last4": number[-4:]}, status=201)

    async def charge(self, request: web.Request) -> web.Response:
        self.charges += 1
        body = await request.json()
        approved = body["token"].startswith("tok_42")
        return web.json_response(
            {"id": f"ch_{self.charges}", "status": "succeeded" if approved else "declined",
             "decline_code": None if approved else "stolen_card", "brand": "visa", "last4": body["token"][-4:],
             "description": body.get("description")},
            status=201 if approved else 402)


@pytest.fixture
async def psp():
    processor = CountingProcessor()
    app = web.Application()
    app.router.add_post("/v1/tokens", processor.tokenize)
    app.router.add_post("/v1/charges", processor.charge)
    server = TestServer(app)
    await server.start_server()
    processor.url = str(server.make_url("")).rstrip("/")
    yield processor
    await server.close()


@pytest.fixture
async def api(settings, mint, psp):
    local = settings.model_copy(update={"card_processor_url": psp.url, "card_processor_retries": 0})
    async with RunningApp(build(local, verifier=mint.verifier()).app) as running:
        yield ApiClient(running.url, mint.token("service:orders", role="service")), running


async def checkout(service: ApiClient, customer_id: str, number: str):
    """What orders does: tokenize for the customer, then charge the order."""
    card = {"card_number": number, "expiry_month": 12, "expiry_year": 2035, "cvc": "123", "customer_id": customer_id}
    tokenized = await service.post("/payment-methods", json=card)
    if tokenized.status != 201:
        return tokenized, None
    body = charge_body(tokenized.body["token"], customer_id=customer_id)
    return tokenized, await charge(service, body)


async def test_thirty_stolen_cards_meet_the_limit_and_the_processor_is_no_longer_called(api, psp, mint):
    service, running = api
    answers = [await checkout(service, "tester", card_number(n)) for n in range(30)]
    # The first three different cards reach the processor and are declined ...
    for tokenized, charged in answers[:3]:
        assert tokenized.status == 201 and charged.status == 402
    # ... from then on every attempt is refused before the processor, with when to come back.
    for tokenized, charged in answers[3:]:
        problem = assert_problem(tokenized, 429, "payment-velocity")
        assert charged is None
        assert 3500 <= int(tokenized.headers["Retry-After"]) <= 3600
        assert problem["retry_after_seconds"] == int(tokenized.headers["Retry-After"])
    assert psp.tokens == 3 and psp.charges == 3
    # Another customer is not affected.
    tokenized, charged = await checkout(service, "someone-else", card_number(99, approved=True))
    assert tokenized.status == 201 and charged.status == 201

    # The customer sees that a payment was declined, not why; an admin sees the processor's reason.
    order_id = answers[0][1].body["order_id"]
    customer = ApiClient(running.url, mint.token("tester"))
    assert (await customer.get(f"/payments/{order_id}")).body["decline_code"] == "declined"
    admin = ApiClient(running.url, mint.token(role="admin"))
    assert (await admin.get(f"/payments/{order_id}")).body["decline_code"] == "stolen_card"
    listed = (await admin.get("/payments", params={"status": "DECLINED"})).body["items"]
    assert {p["decline_code"] for p in listed} == {"stolen_card"}


async def test_a_charge_that_slipped_past_tokenization_is_declined_without_the_processor(api, psp):
    service, _ = api
    tokens = []
    for n in range(4):  # four different cards tokenized before any was declined: all allowed
        card = {"card_number": card_number(n), "expiry_month": 12, "expiry_year": 2035, "cvc": "123",
                "customer_id": "racer"}
        tokens.append((await service.post("/payment-methods", json=card)).body["token"])
    for token in tokens[:3]:
        assert (await charge(service, charge_body(token, customer_id="racer"))).status == 402
    late = await charge(service, charge_body(tokens[3], customer_id="racer"))
    problem = assert_problem(late, 402, "payment-declined")
    assert problem["decline_code"] == "velocity"
    assert psp.charges == 3


async def test_too_many_different_cards_are_refused_even_when_approved(api, psp):
    service, _ = api
    for n in range(5):
        tokenized, charged = await checkout(service, "collector", card_number(n, approved=True))
        assert tokenized.status == 201 and charged.status == 201
    tokenized, _ = await checkout(service, "collector", card_number(5, approved=True))
    assert_problem(tokenized, 429, "payment-velocity")
    assert 590 <= int(tokenized.headers["Retry-After"]) <= 600
    # A card already used is not a new one: paying again with it still works.
    tokenized, charged = await checkout(service, "collector", card_number(0, approved=True))
    assert tokenized.status == 201 and charged.status == 201


async def test_one_card_declined_again_and_again_is_not_card_testing(api, psp):
    """The load generator's customers retry one declined card; the bench pays with one card."""
    service, _ = api
    for _ in range(10):
        tokenized, charged = await checkout(service, "unlucky", card_number(7))
        assert tokenized.status == 201 and charged.status == 402
    for _ in range(10):
        tokenized, charged = await checkout(service, "regular", card_number(1, approved=True))
        assert tokenized.status == 201 and charged.status == 201


async def test_tokenizing_without_a_customer_skips_the_card_count(api, psp):
    service, _ = api
    for n in range(8):
        card = {"card_number": card_number(n), "expiry_month": 12, "expiry_year": 2035, "cvc": "123"}
        assert (await service.post("/payment-methods", json=card)).status == 201
    # The charge still counts declines: it always names the customer.
    body = charge_body("tok_4000000000000001", order_id=new_id(), customer_id="anonymous-ish")
    assert (await charge(service, body)).status == 402
