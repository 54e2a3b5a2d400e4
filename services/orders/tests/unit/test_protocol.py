"""The consumer end of the protocol: every problem type contracts/problems.json says orders acts
on is turned by orders' adapters into a business outcome (a refusal the saga handles, or a
domain error for the customer), never into a retry; anything else is an unexpected reply."""

import json

import pytest
from microshop_chassis.downstream import UnexpectedReply
from microshop_chassis.errors import PROBLEM_BASE
from microshop_chassis.http_client import Reply
from microshop_chassis.testing import contracts_dir
from microshop_orders.clients import InventoryClient, PaymentsClient
from microshop_orders.domain import Card, InvalidCard, PaymentAttemptsLimited
from multidict import CIMultiDict

CARD = Card(number="4242424242424242", expiry_month=12, expiry_year=2030, cvc="123")


class Answering:
    """A ServiceClient that answers every call with one reply."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply

    async def request(self, method, path, **kwargs) -> Reply:
        return self.reply

    async def get(self, path, **kwargs):
        return self.reply

    async def post(self, path, **kwargs):
        return self.reply

    async def put(self, path, **kwargs):
        return self.reply


def problem_reply(entry: dict) -> Reply:
    body = {"type": entry["type"], "title": entry["title"], "status": entry["status"], "detail": entry["meaning"],
            **{member: ["SKU-1"] if member == "skus" else "x" for member in entry["members"]}}
    return Reply(entry["status"], body, CIMultiDict({"Content-Type": "application/problem+json"}))


# How orders meets each problem it acts on: the call that may get it, and what must come of it.
async def reserve(reply):
    return await InventoryClient(Answering(reply)).reserve("o-1", [("SKU-1", 1)])


async def commit(reply):
    return await InventoryClient(Answering(reply)).commit("o-1")


async def tokenize(reply):
    with pytest.raises((InvalidCard, PaymentAttemptsLimited)) as refused:
        await PaymentsClient(Answering(reply), timeout=1).tokenize(CARD, "c-1")
    return refused.value


async def release(reply):
    return await InventoryClient(Answering(reply)).release("o-1")


async def restock(reply):
    return await InventoryClient(Answering(reply)).restock("o-1")


async def charge(reply):
    return await PaymentsClient(Answering(reply), timeout=1).charge(
        order_id="o-1", customer_id="c-1", amount_cents=100, currency="USD", card_token="tok")


async def refund(reply):
    return await PaymentsClient(Answering(reply), timeout=1).refund("o-1")


CALLS = {
    "out-of-stock": [(reserve, False)],
    "unknown-sku": [(reserve, False)],
    "reservation-mismatch": [(reserve, False)],
    "reservation-closed": [(reserve, False), (commit, False)],
    # A compensation meeting these is done or stuck, by the status the problem names ("x" here: stuck).
    "reservation-committed": [(release, False)],
    "reservation-not-committed": [(restock, False)],
    "invalid-card": [(tokenize, None)],
    "payment-velocity": [(tokenize, None)],
    "payment-declined": [(charge, False)],
    "payment-voided": [(charge, False)],
    "payment-not-captured": [(refund, True)],
    "payment-not-found": [(refund, True)],
}


def acted_on_by_orders() -> list[dict]:
    catalog = json.loads((contracts_dir().parent / "problems.json").read_text())["problems"]
    return [entry for entry in catalog if "orders" in entry["consumers"]]


def test_every_problem_orders_acts_on_is_covered_here():
    assert {entry["type"].removeprefix(PROBLEM_BASE) for entry in acted_on_by_orders()} == set(CALLS)


@pytest.mark.parametrize("entry", acted_on_by_orders(), ids=lambda entry: entry["type"].rsplit("/", 1)[-1])
async def test_a_declared_problem_is_a_business_outcome(entry):
    for call, ok in CALLS[entry["type"].removeprefix(PROBLEM_BASE)]:
        outcome = await call(problem_reply(entry))
        if ok is not None:
            assert outcome.ok is ok, (call.__name__, outcome)
            assert ok or outcome.reason  # a refusal says why


async def test_an_undeclared_problem_is_an_unexpected_reply():
    surprise = Reply(409, {"type": PROBLEM_BASE + "something-new", "status": 409, "detail": "?"},
                     CIMultiDict({"Content-Type": "application/problem+json"}))
    for call in (reserve, commit, charge, refund):
        with pytest.raises(UnexpectedReply):
            await call(surprise)


@pytest.mark.parametrize(("call", "found", "done"), [
    (release, "RESTOCKED", True), (release, "COMMITTED", False),
    (restock, "RELEASED", True), (restock, "EXPIRED", True), (restock, "HELD", False),
])
async def test_a_compensation_meeting_a_final_state_is_done_or_stuck_never_retried(call, found, done):
    kind = "reservation-committed" if call is release else "reservation-not-committed"
    reply = Reply(409, {"type": PROBLEM_BASE + kind, "status": 409, "detail": "?", "reservation_status": found},
                  CIMultiDict({"Content-Type": "application/problem+json"}))
    outcome = await call(reply)
    assert outcome.ok is done and outcome.stuck is not done
    assert done or found in outcome.reason


async def test_velocity_refusal_carries_retry_after():
    reply = Reply(429, {"type": PROBLEM_BASE + "payment-velocity", "status": 429, "detail": "?",
                        "retry_after_seconds": 42}, CIMultiDict({"Retry-After": "42"}))
    refused = await tokenize(reply)
    assert isinstance(refused, PaymentAttemptsLimited) and refused.retry_after_seconds == 42
