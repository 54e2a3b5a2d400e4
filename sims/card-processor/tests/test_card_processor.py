"""Black-box tests of the card-processor simulator over real HTTP (aiohttp TestServer)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from microshop_card_processor.__main__ import parse_args
from microshop_card_processor.app import Config, create_app
from microshop_card_processor.cards import luhn_valid

VISA_OK = "4242424242424242"
VISA_DECLINED = "4000000000000002"
VISA_NO_FUNDS = "4000000000009995"
MASTERCARD = "5555555555554444"
NOW = datetime.now(UTC)

# Every test is async (one module-wide mark, works in strict and auto mode).
pytestmark = pytest.mark.asyncio


@asynccontextmanager
async def running(config: Config | None = None) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(config or Config()))) as client:
        yield client


@pytest_asyncio.fixture
async def client() -> AsyncIterator[TestClient]:
    async with running() as c:
        yield c


def card(number: str = VISA_OK, **overrides: Any) -> dict[str, Any]:
    return {"number": number, "exp_month": 12, "exp_year": NOW.year + 2, "cvc": "123", **overrides}


async def tokenize(client: TestClient, number: str = VISA_OK) -> str:
    resp = await client.post("/v1/tokens", json=card(number))
    assert resp.status == 201
    return (await resp.json())["token"]


async def charge(client: TestClient, key: str, body: dict[str, Any], **headers: str):
    resp = await client.post("/v1/charges", json=body, headers={"Idempotency-Key": key, **headers})
    return resp.status, await resp.json(), resp


async def refund(client: TestClient, key: str, charge_id: str):
    resp = await client.post("/v1/refunds", json={"charge_id": charge_id}, headers={"Idempotency-Key": key})
    return resp.status, await resp.json(), resp


async def all_charges(client: TestClient) -> list[dict[str, Any]]:
    resp = await client.get("/_admin/charges")
    assert resp.status == 200
    return (await resp.json())["items"]


async def assert_problem(resp, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith(code.replace("_", "-"))
    assert body["title"] and body["detail"]
    return body


# -- health and tokens -----------------------------------------------------------------------------


async def test_health(client: TestClient) -> None:
    resp = await client.get("/health")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "service": "card-processor", "version": "0.1.0"}


@pytest.mark.parametrize(
    ("number", "brand", "last4"),
    [
        ("4242 4242 4242 4242", "visa", "4242"),
        (MASTERCARD, "mastercard", "4444"),
        ("2223003122003222", "mastercard", "3222"),
        ("378282246310005", "amex", "0005"),
        ("6011111111111117", "unknown", "1117"),
    ],
)
async def test_tokenize_returns_brand_and_last4_only(client: TestClient, number, brand, last4) -> None:
    resp = await client.post("/v1/tokens", json=card(number, cvc="1234" if brand == "amex" else "123"))
    assert resp.status == 201
    body = await resp.json()
    assert set(body) == {"token", "brand", "last4"}
    assert body["token"].startswith("tok_") and len(body["token"]) > 8
    assert (body["brand"], body["last4"]) == (brand, last4)


async def test_card_valid_through_its_expiry_month(client: TestClient) -> None:
    resp = await client.post("/v1/tokens", json=card(exp_month=NOW.month, exp_year=NOW.year))
    assert resp.status == 201


def _last_month() -> tuple[int, int]:
    return (12, NOW.year - 1) if NOW.month == 1 else (NOW.month - 1, NOW.year)


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"number": "4242424242424241"}, "invalid_number"),  # Luhn fails
        ({"number": "4242-4242-4242-4242"}, "invalid_number"),
        ({"number": "42424242424"}, "invalid_number"),  # 11 digits
        ({"number": "4" * 20}, "invalid_number"),
        ({"number": 4242424242424242}, "invalid_number"),  # not a string
        ({"exp_month": _last_month()[0], "exp_year": _last_month()[1]}, "expired_card"),
        ({"exp_year": NOW.year - 1}, "expired_card"),
        ({"exp_month": 13}, "invalid_expiry"),
        ({"exp_month": 0}, "invalid_expiry"),
        ({"exp_year": 30}, "invalid_expiry"),  # two-digit years are not accepted
        ({"exp_year": "2099"}, "invalid_expiry"),
        ({"cvc": "12"}, "invalid_cvc"),
        ({"cvc": "12345"}, "invalid_cvc"),
        ({"cvc": "12a"}, "invalid_cvc"),
        ({"cvc": 123}, "invalid_cvc"),
    ],
)
async def test_tokenize_validation_is_422_problem(client: TestClient, overrides, code) -> None:
    resp = await client.post("/v1/tokens", json=card(**overrides))
    body = await assert_problem(resp, 422, code)
    assert "4242424242424241" not in body["detail"]


async def test_tokenize_rejects_missing_unknown_fields_and_bad_json(client: TestClient) -> None:
    body = card()
    del body["cvc"]
    await assert_problem(await client.post("/v1/tokens", json=body), 422, "invalid_cvc")
    await assert_problem(await client.post("/v1/tokens", json=card(name="A")), 422, "invalid_request")
    await assert_problem(await client.post("/v1/tokens", data=b"{not json"), 400, "invalid_json")
    await assert_problem(await client.post("/v1/tokens", json=[1]), 400, "invalid_json")


async def test_luhn() -> None:
    assert luhn_valid(VISA_OK) and luhn_valid("378282246310005")
    assert not luhn_valid("4242424242424241")


# -- charges ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "status", "outcome", "decline_code"),
    [
        (VISA_OK, 201, "succeeded", None),
        (VISA_DECLINED, 402, "declined", "card_declined"),
        (VISA_NO_FUNDS, 402, "declined", "insufficient_funds"),
        (MASTERCARD, 201, "succeeded", None),  # any other valid number is approved
    ],
)
async def test_test_card_outcomes(client: TestClient, number, status, outcome, decline_code) -> None:
    token = await tokenize(client, number)
    code, body, _ = await charge(client, "k1", {"token": token, "amount_cents": 1999, "currency": "USD"})
    assert code == status
    assert body["id"].startswith("ch_")
    assert body["status"] == outcome
    assert body["decline_code"] == decline_code
    assert body["amount_cents"] == 1999 and body["currency"] == "USD"
    assert body["token"] == token and body["last4"] == number[-4:]
    assert body["idempotency_key"] == "k1" and body["created_at"].endswith("Z")
    # declined charges are results too: stored
    assert [c["id"] for c in await all_charges(client)] == [body["id"]]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"amount_cents": 0}, 422, "invalid_amount"),
        ({"amount_cents": -5}, 422, "invalid_amount"),
        ({"amount_cents": "100"}, 422, "invalid_amount"),
        ({"amount_cents": 10.5}, 422, "invalid_amount"),
        ({"currency": "usd"}, 422, "invalid_currency"),
        ({"currency": "US"}, 422, "invalid_currency"),
        ({"token": "tok_nope"}, 404, "token_not_found"),
        ({"amount": 100}, 422, "invalid_request"),
    ],
)
async def test_charge_errors_store_nothing(client: TestClient, body, status, code) -> None:
    token = await tokenize(client)
    good = {"token": token, "amount_cents": 500, "currency": "EUR"}
    _, _, resp = await charge(client, "k", {**good, **body})
    await assert_problem(resp, status, code)
    assert await all_charges(client) == []
    # no idempotency record was kept for a failed validation: the key is usable once fixed
    assert (await charge(client, "k", good))[0] == 201


async def test_charge_requires_idempotency_key(client: TestClient) -> None:
    token = await tokenize(client)
    resp = await client.post("/v1/charges", json={"token": token, "amount_cents": 1, "currency": "USD"})
    await assert_problem(resp, 400, "idempotency_key_required")
    assert await all_charges(client) == []


@pytest.mark.parametrize("number", [VISA_OK, VISA_DECLINED])
async def test_idempotent_replay_returns_stored_response(client: TestClient, number) -> None:
    token = await tokenize(client, number)
    body = {"token": token, "amount_cents": 700, "currency": "USD", "description": "order 1"}
    first = await charge(client, "order-1", body)
    second = await charge(client, "order-1", body)
    assert second[0] == first[0]
    assert second[1] == first[1]
    assert second[2].headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first[2].headers
    assert len(await all_charges(client)) == 1


async def test_same_key_other_body_is_422(client: TestClient) -> None:
    token = await tokenize(client)
    first = await charge(client, "order-2", {"token": token, "amount_cents": 700, "currency": "USD"})
    assert first[0] == 201
    _, _, resp = await charge(client, "order-2", {"token": token, "amount_cents": 701, "currency": "USD"})
    await assert_problem(resp, 422, "idempotency_key_reused")
    assert [c["amount_cents"] for c in await all_charges(client)] == [700]


async def test_concurrent_same_key_makes_one_charge(client: TestClient) -> None:
    token = await tokenize(client)
    body = {"token": token, "amount_cents": 1234, "currency": "USD"}
    # The latency header keeps all ten in flight together before any reaches the handler.
    results = await asyncio.gather(
        *(charge(client, "order-3", body, **{"X-Simulate-Latency-Ms": "30"}) for _ in range(10))
    )
    assert {status for status, _, _ in results} == {201}
    assert len({b["id"] for _, b, _ in results}) == 1
    assert len(await all_charges(client)) == 1


async def test_lookup_charge_by_id_and_idempotency_key(client: TestClient) -> None:
    token = await tokenize(client)
    _, created, _ = await charge(client, "order-4", {"token": token, "amount_cents": 5, "currency": "USD"})

    resp = await client.get(f"/v1/charges/{created['id']}")
    assert resp.status == 200
    assert await resp.json() == created

    resp = await client.get("/v1/charges", params={"idempotency_key": "order-4"})
    assert (await resp.json())["items"] == [created]
    resp = await client.get("/v1/charges", params={"idempotency_key": "never-used"})
    assert resp.status == 200 and (await resp.json())["items"] == []

    await assert_problem(await client.get("/v1/charges/ch_missing"), 404, "charge_not_found")
    await assert_problem(await client.get("/v1/charges"), 400, "missing_parameter")


# -- refunds ---------------------------------------------------------------------------------------


async def test_refund_flow(client: TestClient) -> None:
    token = await tokenize(client)
    _, ch, _ = await charge(client, "order-5", {"token": token, "amount_cents": 900, "currency": "USD"})

    status, first, resp = await refund(client, "refund-5", ch["id"])
    assert status == 201
    assert first["id"].startswith("re_")
    assert (first["charge_id"], first["amount_cents"], first["currency"]) == (ch["id"], 900, "USD")
    assert first["status"] == "succeeded" and first["created_at"]

    status, again, resp = await refund(client, "refund-5", ch["id"])  # replay
    assert (status, again) == (201, first)
    assert resp.headers.get("Idempotent-Replayed") == "true"

    _, _, resp = await refund(client, "refund-5b", ch["id"])  # second refund under another key
    await assert_problem(resp, 409, "charge_already_refunded")

    charged = await (await client.get(f"/v1/charges/{ch['id']}")).json()
    assert charged["refunded"] is True
    found = await (await client.get("/v1/refunds", params={"idempotency_key": "refund-5"})).json()
    assert found["items"] == [first]
    assert await (await client.get(f"/v1/refunds/{first['id']}")).json() == first
    stats = await (await client.get("/_admin/stats")).json()
    assert (stats["charges"], stats["captured"], stats["declined"], stats["refunds"]) == (1, 1, 0, 1)


async def test_refund_errors(client: TestClient) -> None:
    token = await tokenize(client, VISA_DECLINED)
    _, declined, _ = await charge(client, "order-6", {"token": token, "amount_cents": 900, "currency": "USD"})
    _, _, resp = await refund(client, "refund-6", declined["id"])
    await assert_problem(resp, 409, "charge_not_captured")
    _, _, resp = await refund(client, "refund-7", "ch_missing")
    await assert_problem(resp, 404, "charge_not_found")
    resp = await client.post("/v1/refunds", json={"charge_id": declined["id"]})
    await assert_problem(resp, 400, "idempotency_key_required")

    token = await tokenize(client)
    _, a, _ = await charge(client, "order-8", {"token": token, "amount_cents": 1, "currency": "USD"})
    _, b, _ = await charge(client, "order-9", {"token": token, "amount_cents": 2, "currency": "USD"})
    assert (await refund(client, "refund-8", a["id"]))[0] == 201
    _, _, resp = await refund(client, "refund-8", b["id"])  # same key, other charge
    await assert_problem(resp, 422, "idempotency_key_reused")
    assert (await (await client.get("/_admin/stats")).json())["refunds"] == 1


# -- fault knobs -----------------------------------------------------------------------------------


async def test_failure_rate_one_answers_503_and_stores_nothing(client: TestClient) -> None:
    token = await tokenize(client)
    resp = await client.put("/_admin/config", json={"failure_rate": 1})
    assert (await resp.json())["failure_rate"] == 1

    await assert_problem(await client.post("/v1/tokens", json=card()), 503, "processor_unavailable")
    body = {"token": token, "amount_cents": 100, "currency": "USD"}
    _, _, resp = await charge(client, "order-10", body)
    await assert_problem(resp, 503, "processor_unavailable")
    assert await all_charges(client) == []
    assert (await client.get("/health")).status == 200  # only /v1 is affected

    await client.put("/_admin/config", json={"failure_rate": 0})
    status, _, resp = await charge(client, "order-10", body)
    assert status == 201 and "Idempotent-Replayed" not in resp.headers  # nothing was remembered
    stats = await (await client.get("/_admin/stats")).json()
    assert stats["charges"] == 1
    assert stats["requests"] == 4  # tokenize, two 503s, the charge


async def test_same_seed_gives_same_failures() -> None:
    async def outcomes() -> list[int]:
        async with running(Config(failure_rate=0.5, seed=7)) as c:
            return [(await c.get("/v1/charges", params={"idempotency_key": "x"})).status for _ in range(20)]

    first = await outcomes()
    assert first == await outcomes()
    assert set(first) == {200, 503}


async def test_latency_config_readable_and_changeable(client: TestClient) -> None:
    resp = await client.get("/_admin/config")
    assert await resp.json() == {"latency_ms": 0, "jitter_ms": 0, "failure_rate": 0, "seed": None}

    resp = await client.put("/_admin/config", json={"latency_ms": 120, "jitter_ms": 5})
    assert resp.status == 200
    expected = {"latency_ms": 120, "jitter_ms": 5, "failure_rate": 0, "seed": None}
    assert await resp.json() == expected
    assert await (await client.get("/_admin/config")).json() == expected

    started = time.monotonic()
    assert (await client.get("/v1/charges", params={"idempotency_key": "x"})).status == 200
    assert time.monotonic() - started >= 0.115

    for bad in ({"failure_rate": 1.5}, {"latency_ms": -1}, {"jitter_ms": "5"}):
        await assert_problem(await client.put("/_admin/config", json=bad), 422, "invalid_config")
    await assert_problem(await client.put("/_admin/config", json={"seed": 1}), 422, "invalid_request")
    assert await (await client.get("/_admin/config")).json() == expected


async def test_per_request_latency_header(client: TestClient) -> None:
    started = time.monotonic()
    resp = await client.get("/v1/charges?idempotency_key=x", headers={"X-Simulate-Latency-Ms": "100"})
    assert resp.status == 200
    assert time.monotonic() - started >= 0.095
    resp = await client.get("/v1/charges?idempotency_key=x", headers={"X-Simulate-Latency-Ms": "soon"})
    await assert_problem(resp, 400, "invalid_header")


# -- persistence, secrecy, plumbing ----------------------------------------------------------------


async def test_restart_on_same_db_keeps_tokens_and_idempotency_keys(tmp_path) -> None:
    db = str(tmp_path / "sub" / "card-processor.db")
    async with running(Config(db=db)) as c1:
        token = await tokenize(c1)
        body = {"token": token, "amount_cents": 4200, "currency": "USD"}
        status, first, _ = await charge(c1, "order-11", body)
        assert status == 201

    async with running(Config(db=db)) as c2:
        status, replayed, resp = await charge(c2, "order-11", body)
        assert (status, replayed) == (201, first)
        assert resp.headers.get("Idempotent-Replayed") == "true"
        status, other, _ = await charge(c2, "order-12", body)  # the old token still works
        assert status == 201 and other["last4"] == "4242"
        assert [c["id"] for c in await all_charges(c2)] == [first["id"], other["id"]]


async def test_full_number_never_in_responses_or_logs(client: TestClient, caplog) -> None:
    caplog.set_level(logging.INFO, logger="microshop_card_processor")
    texts = []

    async def grab(resp) -> None:
        texts.append(await resp.text())

    await grab(await client.post("/v1/tokens", json=card("4242 4242 4242 4242")))
    await grab(await client.post("/v1/tokens", json=card("4242424242424241")))
    await grab(await client.post("/v1/tokens", json=card(cvc="98")))
    token = await tokenize(client)
    _, ch, resp = await charge(client, "order-13", {"token": token, "amount_cents": 1, "currency": "USD"})
    texts.append(await resp.text())
    await grab(await client.get(f"/v1/charges/{ch['id']}"))
    await grab(await client.get("/_admin/charges"))
    await grab(await client.get(f"/v1/charges/{VISA_OK}"))

    # The simulator's own log only: aiohttp's access log, which the test server keeps on, writes raw
    # paths, which is why `python -m microshop_card_processor` runs with access_log=None.
    logs = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("microshop_card_processor"))
    assert "POST /v1/tokens 201" in logs and "POST /v1/charges 201" in logs
    for text in [*texts, logs]:
        assert "4242424242424242" not in text
        assert "4242424242424241" not in text
        assert "4242 4242 4242 4242" not in text


async def test_unknown_route_is_problem_json(client: TestClient) -> None:
    await assert_problem(await client.get("/v1/nope"), 404, "not_found")
    await assert_problem(await client.delete("/v1/tokens"), 405, "method_not_allowed")


async def test_cli_reads_env_and_flags_win(monkeypatch) -> None:
    monkeypatch.setenv("MICROSHOP_CARD_PROCESSOR_PORT", "9001")
    monkeypatch.setenv("MICROSHOP_CARD_PROCESSOR_FAILURE_RATE", "0.25")
    monkeypatch.setenv("MICROSHOP_CARD_PROCESSOR_SEED", "3")
    config = parse_args(["--latency-ms", "50", "--db", "x.db"])
    assert (config.port, config.failure_rate, config.seed) == (9001, 0.25, 3)
    assert (config.latency_ms, config.db, config.host) == (50, "x.db", "127.0.0.1")
    assert parse_args(["--port", "9002"]).port == 9002
    with pytest.raises(SystemExit):
        parse_args(["--failure-rate", "2"])
