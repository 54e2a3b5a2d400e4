"""payments over real HTTP, on SQLite and PostgreSQL, with a real NATS and the card-processor simulator."""

import asyncio
import uuid
from datetime import UTC, datetime

from microshop_chassis.http_client import Reply
from microshop_chassis.testing import (
    ApiClient,
    RunningApp,
    assert_event_matches_contract,
    free_port,
    stream_events,
    wait_until,
)
from microshop_payments.bootstrap import build

APPROVED = "4242424242424242"
DECLINED = "4000000000000002"
NO_FUNDS = "4000000000009995"


def card(number: str = APPROVED, **overrides) -> dict:
    return {"card_number": number, "expiry_month": 12, "expiry_year": datetime.now(UTC).year + 2, "cvc": "123",
            **overrides}


async def tokenize(api: ApiClient, number: str = APPROVED) -> str:
    reply = await api.post("/payment-methods", json=card(number))
    assert reply.status == 201, reply.body
    return reply.body["token"]


def new_id() -> str:
    return str(uuid.uuid4())


def charge_body(token: str, *, order_id: str | None = None, customer_id: str | None = None,
                amount_cents: int = 2599) -> dict:
    return {"order_id": order_id or new_id(), "customer_id": customer_id or new_id(), "amount_cents": amount_cents,
            "currency": "USD", "card_token": token}


async def charge(api: ApiClient, body: dict, key: str | None = None) -> Reply:
    return await api.post("/charges", json=body, headers={"Idempotency-Key": key or f"pay-{body['order_id']}"})


def assert_problem(reply: Reply, status: int, kind: str) -> dict:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert reply.body["type"] == f"https://microshop.dev/problems/{kind}"
    assert reply.body["status"] == status and reply.body["detail"]
    return reply.body


async def summary(as_admin: ApiClient) -> dict:
    """The ledger's money figures (without the counts by status)."""
    reply = await as_admin.get("/ledger/summary")
    assert reply.status == 200
    return {k: v for k, v in reply.body.items() if k != "payments_by_status"}


async def statuses(as_admin: ApiClient) -> dict:
    """Payments by status, only the statuses that have any."""
    reply = await as_admin.get("/ledger/summary")
    assert reply.status == 200
    assert set(reply.body["payments_by_status"]) == {"PENDING", "CAPTURED", "DECLINED", "REFUNDED", "VOIDED"}
    return {status: n for status, n in reply.body["payments_by_status"].items() if n}


NO_MONEY = {"captured_cents": 0, "refunded_cents": 0, "net_cents": 0, "captures": 0, "refunds": 0}


# --- payment methods ----------------------------------------------------------------------------


async def test_tokenizing_a_card_returns_a_token_brand_and_last4(as_service):
    reply = await as_service.post("/payment-methods", json=card("5555 5555 5555 4444"))
    assert reply.status == 201
    assert set(reply.body) == {"token", "brand", "last4"}
    assert reply.body["token"].startswith("tok_")
    assert (reply.body["brand"], reply.body["last4"]) == ("mastercard", "4444")
    charged = await charge(as_service, charge_body(reply.body["token"]))
    assert charged.status == 201 and charged.body["card_brand"] == "mastercard"


async def test_invalid_cards_are_422_with_the_processor_code(as_service):
    cases = [
        (card("4242424242424241"), "invalid_number"),  # fails the Luhn check
        (card(expiry_year=2020), "expired_card"),
        (card(expiry_month=13), "invalid_expiry"),
        (card(cvc="12"), "invalid_cvc"),
    ]
    for body, code in cases:
        problem = assert_problem(await as_service.post("/payment-methods", json=body), 422, "invalid-card")
        assert problem["code"] == code


async def test_only_services_tokenize_or_charge(payments, mint):
    customer = ApiClient(payments.url, mint.token(role="customer"))
    assert_problem(await customer.post("/payment-methods", json=card()), 403, "forbidden")
    assert_problem(await charge(customer, charge_body("tok_x")), 403, "forbidden")
    assert_problem(await ApiClient(payments.url).post("/payment-methods", json=card()), 401, "unauthorized")


# --- charges ------------------------------------------------------------------------------------


async def test_an_approved_charge_is_captured(as_service, processor, payments, mint):
    body = charge_body(await tokenize(as_service), amount_cents=4999)
    reply = await charge(as_service, body)
    assert reply.status == 201
    assert set(reply.body) == {"id", "order_id", "customer_id", "amount_cents", "currency", "status", "card_brand",
                               "card_last4", "created_at"}
    assert {k: reply.body[k] for k in ("order_id", "customer_id", "amount_cents", "currency")} == {
        k: body[k] for k in ("order_id", "customer_id", "amount_cents", "currency")}
    assert (reply.body["status"], reply.body["card_brand"], reply.body["card_last4"]) == ("CAPTURED", "visa", "4242")
    assert uuid.UUID(reply.body["id"])
    assert datetime.fromisoformat(reply.body["created_at"]).tzinfo is not None

    [psp_charge] = await processor.charges()
    assert psp_charge["status"] == "succeeded" and psp_charge["amount_cents"] == 4999
    assert psp_charge["idempotency_key"] == f"pay-{body['order_id']}"  # the caller's key, passed on

    owner = ApiClient(payments.url, mint.token(body["customer_id"]))
    seen = await owner.get(f"/payments/{body['order_id']}")
    assert seen.status == 200
    assert seen.body == {**reply.body, "decline_code": None, "updated_at": seen.body["updated_at"]}
    # created when the intent was recorded (before the processor call), updated at the capture
    assert seen.body["updated_at"] >= seen.body["created_at"]


async def test_declines_are_402_problems_and_recorded(as_service, as_admin, processor):
    for number, code in ((DECLINED, "card_declined"), (NO_FUNDS, "insufficient_funds")):
        body = charge_body(await tokenize(as_service, number))
        problem = assert_problem(await charge(as_service, body), 402, "payment-declined")
        assert problem["decline_code"] == code

        stored = await as_admin.get(f"/payments/{body['order_id']}")
        assert stored.status == 200
        assert (stored.body["id"], stored.body["status"], stored.body["decline_code"]) == (
            problem["payment_id"], "DECLINED", code)

        requests_before = (await processor.stats())["requests"]
        again = assert_problem(await charge(as_service, body, key="another-key"), 402, "payment-declined")
        assert again["payment_id"] == problem["payment_id"]
        assert (await processor.stats())["requests"] == requests_before  # answered from the record
    assert await summary(as_admin) == NO_MONEY  # declines move no money


async def test_a_charge_needs_an_idempotency_key(as_service, processor):
    body = charge_body("tok_x")
    assert_problem(await as_service.post("/charges", json=body), 400, "idempotency-key-required")
    blank = await as_service.post("/charges", json=body, headers={"Idempotency-Key": "  "})
    assert_problem(blank, 400, "idempotency-key-required")
    assert (await processor.stats())["requests"] == 0


async def test_charge_input_is_validated_before_the_processor_is_called(as_service, processor):
    for bad in ({"amount_cents": 0}, {"amount_cents": "100"}, {"amount_cents": 12.5}, {"currency": "EUR"},
                {"order_id": ""}, {"card_token": ""}):
        reply = await charge(as_service, {**charge_body("tok_x"), **bad})
        problem = assert_problem(reply, 422, "validation-error")
        assert problem["errors"][0]["loc"][-1] == next(iter(bad))
    assert (await processor.stats())["requests"] == 0


async def test_repeating_a_charge_returns_the_same_payment_and_charges_once(as_service, processor):
    body = charge_body(await tokenize(as_service))
    first = await charge(as_service, body)
    replay = await charge(as_service, body)
    other_key = await charge(as_service, body, key="a-new-key-for-the-same-order")
    assert first.status == replay.status == other_key.status == 201
    assert first.body == replay.body == other_key.body
    assert len(await processor.charges()) == 1
    assert (await processor.stats())["requests"] == 2  # one token, one charge: repeats never left payments


async def test_another_amount_for_a_charged_order_is_409(as_service):
    body = charge_body(await tokenize(as_service), amount_cents=1000)
    first = await charge(as_service, body)
    problem = assert_problem(await charge(as_service, {**body, "amount_cents": 1001}), 409, "payment-mismatch")
    assert problem["payment_id"] == first.body["id"]


async def test_a_key_reused_for_another_order_is_409_and_charges_nothing(as_service, as_admin, processor):
    token = await tokenize(as_service)
    first = charge_body(token)
    assert (await charge(as_service, first, key="shared-key")).status == 201
    other = charge_body(token)
    assert_problem(await charge(as_service, other, key="shared-key"), 409, "idempotency-key-reused")
    assert (await as_admin.get(f"/payments/{other['order_id']}")).body["status"] == "PENDING"
    # Settling it finds the key's charge, sees it is the other order's, and voids this payment
    # without touching that charge.
    voided = await as_service.post(f"/payments/{other['order_id']}/refund")
    assert voided.status == 200 and voided.body["status"] == "VOIDED"
    [psp_charge] = await processor.charges()
    assert psp_charge["description"] == f"order {first['order_id']}" and not psp_charge["refunded"]
    assert await statuses(as_admin) == {"CAPTURED": 1, "VOIDED": 1}


async def test_an_unknown_card_token_is_422_and_charges_nothing(as_service, as_admin, processor):
    body = charge_body("tok_never_issued")
    assert_problem(await charge(as_service, body), 422, "unknown-card-token")
    assert (await as_admin.get(f"/payments/{body['order_id']}")).body["status"] == "PENDING"
    assert await processor.charges() == []
    fixed = await charge(as_service, {**body, "card_token": await tokenize(as_service)})  # the same key
    assert fixed.status == 201 and fixed.body["status"] == "CAPTURED"


async def test_concurrent_charges_for_one_order_charge_once(as_service, as_admin, processor):
    body = charge_body(await tokenize(as_service), amount_cents=777)
    await processor.configure(latency_ms=100)  # keeps every request in flight at once
    replies = await asyncio.gather(*(charge(as_service, body) for _ in range(6)))
    assert [r.status for r in replies] == [201] * 6
    assert len({r.body["id"] for r in replies}) == 1
    assert len(await processor.charges()) == 1
    assert (await as_admin.get("/payments")).body["total"] == 1
    figures = await summary(as_admin)
    assert (figures["captures"], figures["captured_cents"]) == (1, 777)


async def test_racing_charges_with_different_keys_leave_one_live_processor_charge(as_service, as_admin, processor):
    body = charge_body(await tokenize(as_service), amount_cents=555)
    await processor.configure(latency_ms=100)
    replies = await asyncio.gather(*(charge(as_service, body, key=f"key-{i}") for i in range(4)))
    assert [r.status for r in replies] == [201] * 4
    assert len({r.body["id"] for r in replies}) == 1
    # Any duplicate charge made by a losing request was refunded before it answered.
    live = [c for c in await processor.charges() if c["status"] == "succeeded" and not c["refunded"]]
    assert len(live) == 1
    figures = await summary(as_admin)
    assert (figures["captures"], figures["net_cents"]) == (1, 555)


# --- card processor faults ----------------------------------------------------------------------


async def test_a_processor_outage_is_503_with_the_intent_left_pending_then_recovers(as_service, as_admin, processor,
                                                                                     settings):
    body = charge_body(await tokenize(as_service))
    await processor.configure(failure_rate=1)
    down = await charge(as_service, body)
    assert_problem(down, 503, "processor-unavailable")
    assert down.headers["Retry-After"] == "1"
    # One token, then the charge tried once plus every retry.
    assert (await processor.stats())["requests"] == 1 + 1 + settings.card_processor_retries
    assert_problem(await as_service.post("/payment-methods", json=card()), 503, "processor-unavailable")
    assert (await as_admin.get(f"/payments/{body['order_id']}")).body["status"] == "PENDING"
    assert (await as_admin.get("/payments", params={"status": "PENDING"})).body["total"] == 1
    assert await summary(as_admin) == NO_MONEY  # an intent moves no money
    assert await processor.charges() == []

    await processor.configure(failure_rate=0)
    recovered = await charge(as_service, body)  # the caller retries with the same key
    assert recovered.status == 201 and recovered.body["status"] == "CAPTURED"
    assert len(await processor.charges()) == 1
    assert await statuses(as_admin) == {"CAPTURED": 1}


async def test_a_lost_answer_is_settled_by_retrying_with_the_same_key(settings, mint, processor, lossy_link):
    app = build(settings.model_copy(update={"card_processor_url": lossy_link.url}), verifier=mint.verifier()).app
    async with RunningApp(app) as running:
        api = ApiClient(running.url, mint.token("service:orders", role="service"))
        admin = ApiClient(running.url, mint.token(role="admin"))
        body = charge_body(await tokenize(api))
        lossy_link.lose_responses = True
        assert_problem(await charge(api, body), 503, "processor-unavailable")
        # The card was charged, every retry (same key) found that charge, and no answer came back:
        # payments keeps its intent PENDING rather than guess.
        assert len(await processor.charges()) == 1
        assert (await processor.stats())["requests"] == 1 + 1 + settings.card_processor_retries
        assert (await admin.get(f"/payments/{body['order_id']}")).body["status"] == "PENDING"

        lossy_link.lose_responses = False
        settled = await charge(api, body, key="a-different-key")  # the payment's own key is used
        assert settled.status == 201 and settled.body["status"] == "CAPTURED"
        settled = await charge(api, body)  # the caller retries with its key
        assert settled.status == 201 and settled.body["status"] == "CAPTURED"
        [psp_charge] = await processor.charges()
        assert psp_charge["idempotency_key"] == f"pay-{body['order_id']}"
        assert (await summary(admin))["captures"] == 1


async def test_an_unreachable_processor_is_503(settings, mint):
    closed_port = free_port()
    app = build(settings.model_copy(update={"card_processor_url": f"http://127.0.0.1:{closed_port}",
                                            "card_processor_timeout": 1.0}), verifier=mint.verifier()).app
    async with RunningApp(app) as running:
        api = ApiClient(running.url, mint.token("service:orders", role="service"))
        assert_problem(await api.post("/payment-methods", json=card()), 503, "processor-unavailable")
        body = charge_body("tok_x")
        assert_problem(await charge(api, body), 503, "processor-unavailable")
        assert (await api.get(f"/payments/{body['order_id']}")).body["status"] == "PENDING"
        # A refund cannot settle it without asking the processor: 503 too, nothing decided.
        assert_problem(await api.post(f"/payments/{body['order_id']}/refund"), 503, "processor-unavailable")
        assert (await api.get(f"/payments/{body['order_id']}")).body["status"] == "PENDING"


# --- refunds ------------------------------------------------------------------------------------


async def test_a_refund_happens_once_and_repeats_answer_the_same(as_service, as_admin, processor):
    body = charge_body(await tokenize(as_service), amount_cents=3100)
    charged = await charge(as_service, body)
    refunded = await as_service.post(f"/payments/{body['order_id']}/refund")
    assert refunded.status == 200
    assert (refunded.body["id"], refunded.body["status"]) == (charged.body["id"], "REFUNDED")
    assert refunded.body["updated_at"] >= refunded.body["created_at"]
    assert (await processor.stats())["refunds"] == 1

    requests_before = (await processor.stats())["requests"]
    again = await as_service.post(f"/payments/{body['order_id']}/refund")
    assert (again.status, again.body) == (200, refunded.body)
    recharge = await charge(as_service, body)
    assert recharge.status == 200 and recharge.body["status"] == "REFUNDED"
    assert (await processor.stats())["requests"] == requests_before
    assert await summary(as_admin) == {"captured_cents": 3100, "refunded_cents": 3100, "net_cents": 0,
                                       "captures": 1, "refunds": 1}


async def test_concurrent_refunds_refund_once(as_service, as_admin, processor):
    body = charge_body(await tokenize(as_service), amount_cents=800)
    await charge(as_service, body)
    await processor.configure(latency_ms=100)
    replies = await asyncio.gather(*(as_service.post(f"/payments/{body['order_id']}/refund") for _ in range(4)))
    assert [r.status for r in replies] == [200] * 4
    assert all(r.body == replies[0].body for r in replies) and replies[0].body["status"] == "REFUNDED"
    assert (await processor.stats())["refunds"] == 1
    figures = await summary(as_admin)
    assert (figures["refunds"], figures["refunded_cents"], figures["net_cents"]) == (1, 800, 0)


async def test_refunding_a_declined_payment_is_refused(as_service, payments, mint):
    declined = charge_body(await tokenize(as_service, DECLINED))
    await charge(as_service, declined)
    assert_problem(await as_service.post(f"/payments/{declined['order_id']}/refund"), 409, "payment-not-captured")
    customer = ApiClient(payments.url, mint.token(declined["customer_id"]))
    assert_problem(await customer.post(f"/payments/{declined['order_id']}/refund"), 403, "forbidden")


async def test_a_refund_during_an_outage_is_503_and_changes_nothing(as_service, as_admin, processor):
    body = charge_body(await tokenize(as_service))
    await charge(as_service, body)
    await processor.configure(failure_rate=1)
    assert_problem(await as_service.post(f"/payments/{body['order_id']}/refund"), 503, "processor-unavailable")
    assert (await as_admin.get(f"/payments/{body['order_id']}")).body["status"] == "CAPTURED"
    assert (await summary(as_admin))["refunds"] == 0

    await processor.configure(failure_rate=0)
    retried = await as_service.post(f"/payments/{body['order_id']}/refund")
    assert retried.status == 200 and retried.body["status"] == "REFUNDED"
    assert (await processor.stats())["refunds"] == 1


# --- intents and tombstones: a refund may come before, during or after a charge ---------------
# orders' saga deadline refunds an order whose charge outcome it does not know. Whatever the
# interleaving, the order then keeps no money: the processor's books net to zero for it.


async def payment_status(api: ApiClient, order_id: str) -> str | None:
    reply = await api.get(f"/payments/{order_id}")
    return reply.body["status"] if reply.status == 200 else None


async def wait_for_status(api: ApiClient, order_id: str, status: str) -> None:
    async def reached() -> bool:
        return await payment_status(api, order_id) == status

    await wait_until(reached, timeout=10, what=f"payment of order {order_id} to be {status}")


def live_charges(charges: list[dict]) -> list[dict]:
    return [c for c in charges if c["status"] == "succeeded" and not c["refunded"]]


async def test_the_intent_is_recorded_pending_before_the_processor_is_called(as_service, as_admin, processor):
    body = charge_body(await tokenize(as_service), amount_cents=1500)
    await processor.configure(latency_ms=1500)  # the processor sits on the charge
    in_flight = asyncio.create_task(charge(as_service, body, key=f"order-{body['order_id']}"))
    await wait_for_status(as_admin, body["order_id"], "PENDING")
    pending = (await as_admin.get(f"/payments/{body['order_id']}")).body
    assert (pending["amount_cents"], pending["customer_id"], pending["card_brand"]) == (1500, body["customer_id"],
                                                                                     None)
    assert await processor.charges() == []  # recorded before the processor made anything
    assert await statuses(as_admin) == {"PENDING": 1}
    assert await summary(as_admin) == NO_MONEY

    done = await in_flight
    assert done.status == 201 and done.body["status"] == "CAPTURED" and done.body["id"] == pending["id"]
    assert await statuses(as_admin) == {"CAPTURED": 1}


async def test_a_refund_before_any_charge_leaves_a_tombstone_that_refuses_the_charge(as_service, as_admin,
                                                                                      processor, payments, mint):
    body = charge_body(await tokenize(as_service))
    voided = await as_service.post(f"/payments/{body['order_id']}/refund")
    assert voided.status == 200
    assert {k: voided.body[k] for k in ("order_id", "status", "amount_cents", "currency", "customer_id")} == {
        "order_id": body["order_id"], "status": "VOIDED", "amount_cents": 0, "currency": "USD", "customer_id": ""}
    again = await as_service.post(f"/payments/{body['order_id']}/refund")
    assert (again.status, again.body) == (200, voided.body)

    requests_before = (await processor.stats())["requests"]
    assert_problem(await charge(as_service, body), 409, "payment-voided")
    assert_problem(await charge(as_service, body, key="another-key"), 409, "payment-voided")
    assert (await processor.stats())["requests"] == requests_before  # refused without calling it
    assert await processor.charges() == []
    assert await summary(as_admin) == NO_MONEY
    assert await statuses(as_admin) == {"VOIDED": 1}
    assert (await as_admin.get("/payments", params={"status": "VOIDED"})).body["total"] == 1
    customer = ApiClient(payments.url, mint.token(body["customer_id"]))
    assert_problem(await customer.get(f"/payments/{body['order_id']}"), 404, "payment-not-found")


async def test_a_charge_completing_after_a_refund_is_given_back_at_once(as_service, as_admin, processor):
    body = charge_body(await tokenize(as_service), amount_cents=4200)
    await processor.configure(latency_ms=1500)
    in_flight = asyncio.create_task(charge(as_service, body, key=f"order-{body['order_id']}"))
    await wait_for_status(as_admin, body["order_id"], "PENDING")
    await processor.configure(latency_ms=0)  # only the charge already sent stays slow

    # The refund asks the processor, which has made no charge yet: the payment is voided.
    voided = await as_service.post(f"/payments/{body['order_id']}/refund")
    assert voided.status == 200 and voided.body["status"] == "VOIDED"
    assert voided.body["amount_cents"] == 4200  # the intent's figures stay on the record

    # The processor then approves the charge; payments finds its payment VOIDED and refunds it.
    assert_problem(await in_flight, 409, "payment-voided")
    [psp_charge] = await processor.charges()
    assert psp_charge["status"] == "succeeded" and psp_charge["refunded"]
    assert (await processor.stats())["refunds"] == 1
    assert await summary(as_admin) == NO_MONEY  # the ledger never held it
    assert await statuses(as_admin) == {"VOIDED": 1}

    requests_before = (await processor.stats())["requests"]
    assert_problem(await charge(as_service, body), 409, "payment-voided")
    assert (await as_service.post(f"/payments/{body['order_id']}/refund")).body["status"] == "VOIDED"
    assert (await processor.stats())["requests"] == requests_before  # the void is done: nothing to repeat


async def test_a_void_whose_answer_is_lost_is_finished_by_the_next_call(settings, mint, processor, lossy_link):
    app = build(settings.model_copy(update={"card_processor_url": lossy_link.url}), verifier=mint.verifier()).app
    async with RunningApp(app) as running:
        api = ApiClient(running.url, mint.token("service:orders", role="service"))
        admin = ApiClient(running.url, mint.token(role="admin"))
        body = charge_body(await tokenize(api))
        await processor.configure(latency_ms=1500)
        in_flight = asyncio.create_task(charge(api, body))
        await wait_for_status(admin, body["order_id"], "PENDING")
        await processor.configure(latency_ms=0)
        lossy_link.lose_responses, lossy_link.lose_only = True, "/v1/refunds"
        assert (await api.post(f"/payments/{body['order_id']}/refund")).body["status"] == "VOIDED"
        # The late charge is refunded at the processor, but payments never hears back: it says so.
        assert_problem(await in_flight, 503, "processor-unavailable")

        lossy_link.lose_responses = False
        assert_problem(await charge(api, body), 409, "payment-voided")  # repeats the void, same key
        assert live_charges(await processor.charges()) == []
        assert (await processor.stats())["refunds"] == 1
        assert await summary(admin) == NO_MONEY


async def test_a_refund_voids_a_pending_payment_the_processor_never_charged(as_service, as_admin, processor):
    body = charge_body(await tokenize(as_service))
    await processor.configure(failure_rate=1)
    assert_problem(await charge(as_service, body), 503, "processor-unavailable")
    assert await statuses(as_admin) == {"PENDING": 1}

    await processor.configure(failure_rate=0)
    voided = await as_service.post(f"/payments/{body['order_id']}/refund")
    assert voided.status == 200 and voided.body["status"] == "VOIDED"
    assert_problem(await charge(as_service, body), 409, "payment-voided")
    assert await processor.charges() == []
    assert await summary(as_admin) == NO_MONEY
    assert await statuses(as_admin) == {"VOIDED": 1}


async def test_a_refund_captures_then_refunds_a_pending_payment_the_processor_did_charge(settings, mint, processor,
                                                                                          lossy_link):
    app = build(settings.model_copy(update={"card_processor_url": lossy_link.url}), verifier=mint.verifier()).app
    async with RunningApp(app) as running:
        api = ApiClient(running.url, mint.token("service:orders", role="service"))
        admin = ApiClient(running.url, mint.token(role="admin"))
        body = charge_body(await tokenize(api), amount_cents=6100)
        lossy_link.lose_responses = True  # the processor approves; payments never hears it
        assert_problem(await charge(api, body), 503, "processor-unavailable")
        assert await statuses(admin) == {"PENDING": 1}
        assert len(live_charges(await processor.charges())) == 1

        lossy_link.lose_responses = False
        refunded = await api.post(f"/payments/{body['order_id']}/refund")
        assert refunded.status == 200 and refunded.body["status"] == "REFUNDED"
        assert (refunded.body["amount_cents"], refunded.body["card_last4"]) == (6100, "4242")
        [psp_charge] = await processor.charges()
        assert psp_charge["refunded"]
        assert await summary(admin) == {"captured_cents": 6100, "refunded_cents": 6100, "net_cents": 0,
                                        "captures": 1, "refunds": 1}
        assert await statuses(admin) == {"REFUNDED": 1}
        replay = await charge(api, body)
        assert replay.status == 200 and replay.body["status"] == "REFUNDED"

        events = await stream_events(settings.nats_url, "events.payments.>", expect=2,
                                     match=lambda e: e["data"]["order_id"] == body["order_id"])
        assert [e["type"] for e in events] == ["PaymentCaptured", "PaymentRefunded"]
        for event in events:
            assert_event_matches_contract(event)
            assert (event["data"]["payment_id"], event["data"]["amount_cents"]) == (refunded.body["id"], 6100)


async def test_a_refund_records_a_decline_it_finds_for_a_pending_payment(settings, mint, processor, lossy_link):
    app = build(settings.model_copy(update={"card_processor_url": lossy_link.url}), verifier=mint.verifier()).app
    async with RunningApp(app) as running:
        api = ApiClient(running.url, mint.token("service:orders", role="service"))
        admin = ApiClient(running.url, mint.token(role="admin"))
        body = charge_body(await tokenize(api, DECLINED))
        lossy_link.lose_responses = True
        assert_problem(await charge(api, body), 503, "processor-unavailable")
        lossy_link.lose_responses = False
        assert_problem(await api.post(f"/payments/{body['order_id']}/refund"), 409, "payment-not-captured")
        stored = (await admin.get(f"/payments/{body['order_id']}")).body
        assert (stored["status"], stored["decline_code"]) == ("DECLINED", "card_declined")
        assert await summary(admin) == NO_MONEY


async def test_a_repeated_charge_completes_a_pending_payment_with_its_stored_key(as_service, as_admin, processor):
    body = charge_body(await tokenize(as_service), amount_cents=900)
    await processor.configure(failure_rate=1)
    assert_problem(await charge(as_service, body, key="first-key"), 503, "processor-unavailable")
    await processor.configure(failure_rate=0)
    assert_problem(await charge(as_service, {**body, "amount_cents": 901}, key="second-key"), 409,
                   "payment-mismatch")
    replies = await asyncio.gather(*(charge(as_service, body, key=f"key-{i}") for i in range(3)))
    assert [r.status for r in replies] == [201] * 3 and len({r.body["id"] for r in replies}) == 1
    [psp_charge] = await processor.charges()
    assert psp_charge["idempotency_key"] == "first-key"  # the key stored with the intent
    assert await summary(as_admin) == {"captured_cents": 900, "refunded_cents": 0, "net_cents": 900,
                                       "captures": 1, "refunds": 0}


async def test_charges_racing_refunds_never_leave_money_with_the_shop(as_service, as_admin, processor):
    token = await tokenize(as_service)
    await processor.configure(latency_ms=20, jitter_ms=40)
    bodies = [charge_body(token, amount_cents=100 + i) for i in range(6)]

    async def race(body: dict) -> tuple[Reply, Reply]:
        charged, refunded = await asyncio.gather(
            charge(as_service, body), as_service.post(f"/payments/{body['order_id']}/refund"))
        return charged, refunded

    for charged, refunded in await asyncio.gather(*(race(b) for b in bodies)):
        assert refunded.status == 200 and refunded.body["status"] in ("REFUNDED", "VOIDED"), refunded.body
        if refunded.body["status"] == "VOIDED":
            assert_problem(charged, 409, "payment-voided")
        else:
            assert charged.status in (200, 201), charged.body
    assert live_charges(await processor.charges()) == []
    assert (await summary(as_admin))["net_cents"] == 0
    assert "PENDING" not in await statuses(as_admin)


# --- reading ------------------------------------------------------------------------------------


async def test_a_payment_is_visible_to_its_customer_admins_and_services_only(as_service, as_admin, payments, mint):
    body = charge_body(await tokenize(as_service))
    await charge(as_service, body)
    path = f"/payments/{body['order_id']}"
    for reader in (ApiClient(payments.url, mint.token(body["customer_id"])), as_admin, as_service):
        reply = await reader.get(path)
        assert reply.status == 200 and reply.body["order_id"] == body["order_id"]

    stranger = ApiClient(payments.url, mint.token(new_id()))
    hidden = assert_problem(await stranger.get(path), 404, "payment-not-found")
    missing = assert_problem(await stranger.get(f"/payments/{new_id()}"), 404, "payment-not-found")
    assert hidden.keys() == missing.keys()  # looks exactly like a payment that does not exist
    assert_problem(await ApiClient(payments.url).get(path), 401, "unauthorized")


async def test_admins_list_payments_and_read_the_ledger(as_service, as_admin, payments, mint):
    token = await tokenize(as_service)
    captured = [charge_body(token, amount_cents=amount) for amount in (1000, 2000, 3000)]
    for body in captured:
        assert (await charge(as_service, body)).status == 201
    declined = charge_body(await tokenize(as_service, DECLINED), amount_cents=500)
    await charge(as_service, declined)
    refunded = captured[1]
    assert (await as_service.post(f"/payments/{refunded['order_id']}/refund")).status == 200

    everything = await as_admin.get("/payments")
    assert everything.status == 200 and everything.body["total"] == 4
    by_status = {}
    for status in ("CAPTURED", "DECLINED", "REFUNDED"):
        page = (await as_admin.get("/payments", params={"status": status})).body
        assert page["total"] == len(page["items"])
        by_status[status] = sorted(p["order_id"] for p in page["items"])
    assert by_status == {
        "CAPTURED": sorted(b["order_id"] for b in captured if b is not refunded),
        "DECLINED": [declined["order_id"]],
        "REFUNDED": [refunded["order_id"]],
    }
    first, second = [(await as_admin.get("/payments", params={"limit": 2, "offset": o})).body for o in (0, 2)]
    assert len(first["items"]) == len(second["items"]) == 2 and first["total"] == second["total"] == 4
    assert {p["id"] for p in first["items"] + second["items"]} == {p["id"] for p in everything.body["items"]}

    captured_cents = sum(b["amount_cents"] for b in captured)
    assert await summary(as_admin) == {
        "captured_cents": captured_cents, "refunded_cents": refunded["amount_cents"],
        "net_cents": captured_cents - refunded["amount_cents"], "captures": len(captured), "refunds": 1,
    }
    assert await statuses(as_admin) == {"CAPTURED": 2, "DECLINED": 1, "REFUNDED": 1}

    customer = ApiClient(payments.url, mint.token(captured[0]["customer_id"]))
    assert_problem(await customer.get("/payments"), 403, "forbidden")
    assert_problem(await customer.get("/ledger/summary"), 403, "forbidden")
    assert_problem(await as_admin.get("/payments", params={"status": "SETTLED"}), 422, "validation-error")
    assert_problem(await as_admin.get("/payments", params={"limit": 1001}), 422, "validation-error")


# --- events -------------------------------------------------------------------------------------


async def test_payment_events_reach_nats_and_match_their_contracts(as_service, settings):
    body = charge_body(await tokenize(as_service), amount_cents=1234)
    payment = (await charge(as_service, body)).body
    await as_service.post(f"/payments/{body['order_id']}/refund")
    declined = charge_body(await tokenize(as_service, NO_FUNDS), amount_cents=99)
    declined_id = (await charge(as_service, declined)).body["payment_id"]

    events = await stream_events(settings.nats_url, "events.payments.>", expect=2,
                                 match=lambda e: e["data"]["order_id"] == body["order_id"])
    [declined_event] = await stream_events(settings.nats_url, "events.payments.>",
                                           match=lambda e: e["data"]["order_id"] == declined["order_id"])
    for event in (*events, declined_event):
        assert_event_matches_contract(event)
        assert event["source"] == "payments"
    common = {"payment_id": payment["id"], "order_id": body["order_id"], "customer_id": body["customer_id"],
              "amount_cents": 1234, "currency": "USD"}
    assert [(e["type"], e["data"]) for e in events] == [
        ("PaymentCaptured", {**common, "card_brand": "visa", "card_last4": "4242"}),
        ("PaymentRefunded", common),
    ]
    assert (declined_event["type"], declined_event["data"]) == ("PaymentDeclined", {
        "payment_id": declined_id, "order_id": declined["order_id"], "customer_id": declined["customer_id"],
        "amount_cents": 99, "currency": "USD", "decline_code": "insufficient_funds"})


# --- documentation ------------------------------------------------------------------------------


async def test_the_openapi_document_describes_every_route(payments):
    document = (await ApiClient(payments.url).get("/openapi.json")).body
    routes = {(method.upper(), path): op for path, ops in document["paths"].items() for method, op in ops.items()}
    assert {("POST", "/payment-methods"), ("POST", "/charges"), ("POST", "/payments/{order_id}/refund"),
            ("GET", "/payments/{order_id}"), ("GET", "/payments"), ("GET", "/ledger/summary")} <= routes.keys()
    for (method, path), op in routes.items():
        assert op.get("summary"), f"{method} {path} has no summary"
        success = next(code for code in op["responses"] if code.startswith("2"))
        assert "schema" in op["responses"][success]["content"]["application/json"], f"{method} {path}"
