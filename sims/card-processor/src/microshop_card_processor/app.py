"""The card-processor HTTP API (aiohttp.web).

Request flow: ``_errors_and_access_log`` (outermost: problem+json for every error, one log line per
request) -> ``_faults`` (latency and random 503s, /v1 only) -> handler.

Idempotency: a write under an ``Idempotency-Key`` either creates a resource and stores the exact
response it gave (replayed for a retry with the same body), or fails validation and stores nothing,
so a retry after fixing the cause is safe. Keys are scoped per endpoint (charges, refunds).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from aiohttp import web

from . import __version__
from .cards import DECLINES, CardError, validate_card
from .store import Store

log = logging.getLogger("microshop_card_processor")

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://microshop.dev/problems/card-processor/"
MAX_AMOUNT_CENTS = 99_999_999  # like real PSPs: a sanity cap, and far below SQLite's int64 limit
MAX_KEY_LENGTH = 255
_CURRENCY = re.compile(r"[A-Z]{3}")
_PAN_LIKE = re.compile(r"\d{12,19}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 8090
    db: str = ":memory:"
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    failure_rate: float = 0.0
    seed: int | None = None


class Problem(Exception):
    """Raise from a handler to answer with an RFC 9457 problem+json body."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def safe_path(request: web.Request) -> str:
    """request.path (no query string) with anything shaped like a card number masked."""
    return _PAN_LIKE.sub("[redacted]", request.path)


def problem_response(status: int, code: str, detail: str, instance: str) -> web.Response:
    body = {
        "type": PROBLEM_BASE + code.replace("_", "-"),
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": instance,
    }
    return web.json_response(body, status=status, content_type=PROBLEM_JSON)


class KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Any, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: Any) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass
class State:
    """Mutable runtime state: fault knobs (changeable via /_admin/config) and counters."""

    latency_ms: float
    jitter_ms: float
    failure_rate: float
    seed: int | None
    rng: random.Random
    requests: int = 0
    locks: KeyedLocks = field(default_factory=KeyedLocks)

    def config(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "jitter_ms": self.jitter_ms,
            "failure_rate": self.failure_rate,
            "seed": self.seed,
        }


STATE = web.AppKey("state", State)
STORE = web.AppKey("store", Store)


# -- helpers ---------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


async def _json_object(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise Problem(400, "invalid_json", "request body must be valid JSON") from None
    if not isinstance(body, dict):
        raise Problem(400, "invalid_json", "request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Problem(422, "invalid_request", f"unknown field(s): {', '.join(unknown)}")
    return body


def _idempotency_key(request: web.Request) -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key:
        raise Problem(400, "idempotency_key_required", "the Idempotency-Key header is required")
    if len(key) > MAX_KEY_LENGTH:
        raise Problem(400, "invalid_idempotency_key", f"Idempotency-Key is longer than {MAX_KEY_LENGTH}")
    return key


def _fingerprint(normalized: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(normalized, sort_keys=True).encode()).hexdigest()


def _replay(store: Store, scope: str, key: str, fingerprint: str) -> web.Response | None:
    """The stored response for a retry, a 422 for a key reused with another body, else None."""
    record = store.get_idempotent(scope, key)
    if record is None:
        return None
    if record["fingerprint"] != fingerprint:
        raise Problem(
            422, "idempotency_key_reused", "Idempotency-Key already used with a different request body"
        )
    return web.json_response(
        text=record["body"], status=record["status_code"], headers={"Idempotent-Replayed": "true"}
    )


# -- middlewares -----------------------------------------------------------------------------------


@web.middleware
async def _errors_and_access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    instance = safe_path(request)
    try:
        response = await handler(request)
    except Problem as exc:
        response = problem_response(exc.status, exc.code, exc.detail, instance)
    except web.HTTPException as exc:  # router 404/405, body too large...
        if exc.status < 400:
            raise
        code = HTTPStatus(exc.status).phrase.lower().replace(" ", "_")
        response = problem_response(exc.status, code, exc.reason, instance)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, instance)
        response = problem_response(500, "internal_error", "unexpected error", instance)
    elapsed_ms = (time.perf_counter() - started) * 1000
    log.info("%s %s %s %.1fms", request.method, safe_path(request), response.status, elapsed_ms)
    return response


@web.middleware
async def _faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/v1/"):
        return await handler(request)
    state = request.app[STATE]
    state.requests += 1
    delay_ms = state.latency_ms + state.rng.uniform(0, state.jitter_ms)
    extra = request.headers.get("X-Simulate-Latency-Ms")
    if extra is not None:
        try:
            extra_ms = float(extra)
        except ValueError:
            extra_ms = -1.0
        if not 0 <= extra_ms <= 600_000:
            raise Problem(400, "invalid_header", "X-Simulate-Latency-Ms must be a number of ms in 0..600000")
        delay_ms += extra_ms
    if delay_ms > 0:
        # Read the body first: it is buffered, so a client that gives up during the delay still
        # gets its charge made (aiohttp does not cancel the handler) - a realistic "unknown outcome".
        await request.read()
        await asyncio.sleep(delay_ms / 1000)
    if state.rng.random() < state.failure_rate:
        raise Problem(503, "processor_unavailable", "the card processor is temporarily unavailable")
    return await handler(request)


# -- /health and /v1 -------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": "card-processor", "version": __version__})


async def create_token(request: web.Request) -> web.Response:
    body = await _json_object(request, {"number", "exp_month", "exp_year", "cvc"})
    try:
        card = validate_card(body)
    except CardError as exc:
        raise Problem(422, exc.code, exc.detail) from None
    token = _new_id("tok")
    request.app[STORE].add_token(token, card, _now())  # the CVC is checked, never stored
    return web.json_response({"token": token, "brand": card.brand, "last4": card.last4}, status=201)


def _charge_request(body: dict[str, Any]) -> dict[str, Any]:
    token, amount, currency = body.get("token"), body.get("amount_cents"), body.get("currency")
    description = body.get("description")
    if not isinstance(token, str) or not token:
        raise Problem(422, "invalid_request", "token must be a non-empty string")
    if not _is_int(amount) or not 0 < amount <= MAX_AMOUNT_CENTS:
        raise Problem(422, "invalid_amount", f"amount_cents must be an integer in 1..{MAX_AMOUNT_CENTS}")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise Problem(422, "invalid_currency", "currency must be a 3-letter uppercase ISO 4217 code")
    if description is not None and (not isinstance(description, str) or len(description) > 1000):
        raise Problem(422, "invalid_request", "description must be a string of at most 1000 characters")
    return {"token": token, "amount_cents": amount, "currency": currency, "description": description}


async def create_charge(request: web.Request) -> web.Response:
    key = _idempotency_key(request)
    body = await _json_object(request, {"token", "amount_cents", "currency", "description"})
    req = _charge_request(body)
    fingerprint = _fingerprint(req)
    store, state = request.app[STORE], request.app[STATE]
    async with state.locks.hold(("charges", key)):
        replay = _replay(store, "charges", key, fingerprint)
        if replay is not None:
            return replay
        card = store.get_token(req["token"])
        if card is None:
            raise Problem(404, "token_not_found", "no such token")
        decline_code = DECLINES.get(card["number"])
        charge = {
            "id": _new_id("ch"),
            "status": "declined" if decline_code else "succeeded",
            "decline_code": decline_code,
            "amount_cents": req["amount_cents"],
            "currency": req["currency"],
            "token": req["token"],
            "brand": card["brand"],
            "last4": card["last4"],
            "description": req["description"],
            "idempotency_key": key,
            "refunded": False,
            "created_at": _now(),
        }
        status = 402 if decline_code else 201
        store.add_charge(charge, fingerprint, status)  # declines are results too: stored and replayed
    return web.json_response(charge, status=status)


async def get_charge(request: web.Request) -> web.Response:
    charge = request.app[STORE].get_charge(request.match_info["charge_id"])
    if charge is None:
        raise Problem(404, "charge_not_found", "no such charge")
    return web.json_response(charge)


def _required_query(request: web.Request, name: str) -> str:
    value = request.query.get(name, "")
    if not value:
        raise Problem(400, "missing_parameter", f"query parameter {name} is required")
    return value


async def find_charges(request: web.Request) -> web.Response:
    """Lets a caller whose charge request had an unknown outcome ask what happened."""
    charge = request.app[STORE].find_charge(_required_query(request, "idempotency_key"))
    return web.json_response({"items": [charge] if charge else []})


async def create_refund(request: web.Request) -> web.Response:
    key = _idempotency_key(request)
    body = await _json_object(request, {"charge_id"})
    charge_id = body.get("charge_id")
    if not isinstance(charge_id, str) or not charge_id:
        raise Problem(422, "invalid_request", "charge_id must be a non-empty string")
    fingerprint = _fingerprint({"charge_id": charge_id})
    store, state = request.app[STORE], request.app[STATE]
    async with state.locks.hold(("refunds", key)):
        replay = _replay(store, "refunds", key, fingerprint)
        if replay is not None:
            return replay
        charge = store.get_charge(charge_id)
        if charge is None:
            raise Problem(404, "charge_not_found", "no such charge")
        if charge["status"] != "succeeded":
            raise Problem(409, "charge_not_captured", "a declined charge cannot be refunded")
        if charge["refunded"]:
            raise Problem(409, "charge_already_refunded", "the charge has already been refunded")
        refund = {
            "id": _new_id("re"),
            "charge_id": charge_id,
            "amount_cents": charge["amount_cents"],  # full refunds only
            "currency": charge["currency"],
            "status": "succeeded",
            "idempotency_key": key,
            "created_at": _now(),
        }
        store.add_refund(refund, fingerprint, 201)
    return web.json_response(refund, status=201)


async def get_refund(request: web.Request) -> web.Response:
    refund = request.app[STORE].get_refund(request.match_info["refund_id"])
    if refund is None:
        raise Problem(404, "refund_not_found", "no such refund")
    return web.json_response(refund)


async def find_refunds(request: web.Request) -> web.Response:
    refund = request.app[STORE].find_refund(_required_query(request, "idempotency_key"))
    return web.json_response({"items": [refund] if refund else []})


# -- /_admin (test and operator hooks; no faults applied) ------------------------------------------


def _check_faults(body: dict[str, Any]) -> None:
    for name in ("latency_ms", "jitter_ms"):
        if name in body and not (_is_number(body[name]) and 0 <= body[name] <= 600_000):
            raise Problem(422, "invalid_config", f"{name} must be a number in 0..600000")
    rate = body.get("failure_rate", 0)
    if not (_is_number(rate) and 0 <= rate <= 1):
        raise Problem(422, "invalid_config", "failure_rate must be a number in 0..1")


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].config())


async def put_config(request: web.Request) -> web.Response:
    body = await _json_object(request, {"latency_ms", "jitter_ms", "failure_rate"})
    _check_faults(body)
    state = request.app[STATE]
    for name, value in body.items():
        setattr(state, name, float(value))
    log.info("fault config changed: %s", state.config())
    return web.json_response(state.config())


async def get_stats(request: web.Request) -> web.Response:
    stats = request.app[STORE].stats()
    stats["requests"] = request.app[STATE].requests  # /v1 requests since this process started
    return web.json_response(stats)


async def list_charges(request: web.Request) -> web.Response:
    return web.json_response({"items": request.app[STORE].list_charges()})


# -- factory ---------------------------------------------------------------------------------------


def create_app(config: Config | None = None) -> web.Application:
    config = config or Config()
    _check_faults(
        {"latency_ms": config.latency_ms, "jitter_ms": config.jitter_ms, "failure_rate": config.failure_rate}
    )
    app = web.Application(middlewares=[_errors_and_access_log, _faults])
    app[STATE] = State(
        latency_ms=float(config.latency_ms),
        jitter_ms=float(config.jitter_ms),
        failure_rate=float(config.failure_rate),
        seed=config.seed,
        rng=random.Random(config.seed),  # seed=None: OS entropy
    )

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        app[STORE] = Store(config.db)
        yield
        app[STORE].close()

    app.cleanup_ctx.append(store_ctx)
    app.router.add_get("/health", health)
    app.router.add_post("/v1/tokens", create_token)
    app.router.add_post("/v1/charges", create_charge)
    app.router.add_get("/v1/charges", find_charges)
    app.router.add_get("/v1/charges/{charge_id}", get_charge)
    app.router.add_post("/v1/refunds", create_refund)
    app.router.add_get("/v1/refunds", find_refunds)
    app.router.add_get("/v1/refunds/{refund_id}", get_refund)
    app.router.add_get("/_admin/config", get_config)
    app.router.add_put("/_admin/config", put_config)
    app.router.add_get("/_admin/stats", get_stats)
    app.router.add_get("/_admin/charges", list_charges)
    return app
