"""Bearer-token verification against a JWKS, role dependencies, and the service-token provider."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter
from microshop_chassis.app import create_app
from microshop_chassis.auth import (
    ALGORITHM,
    AUDIENCE,
    ISSUER,
    AdminUser,
    CurrentUser,
    JwtVerifier,
    ServiceCaller,
    ServiceTokenProvider,
    http_jwks_loader,
)
from microshop_chassis.errors import PROBLEM_JSON, Problem
from microshop_chassis.provide import provide
from microshop_chassis.settings import ServiceSettings
from microshop_chassis.testing import ApiClient, RunningApp, TokenMint, free_port


class SigningKey:
    """An Ed25519 key of the test's own, to sign tokens with any claims or any kid."""

    def __init__(self, kid: str | None = None) -> None:
        self.kid = kid or uuid.uuid4().hex
        self.key = Ed25519PrivateKey.generate()

    def sign(self, **overrides) -> str:
        now = int(time.time())
        claims = {"sub": "u-1", "role": "customer", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600}
        claims.update(overrides)
        return jwt.encode(claims, self.key, algorithm=ALGORITHM, headers={"kid": self.kid})

    def jwk(self) -> dict:
        public = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.key.public_key()))
        return {**public, "kid": self.kid, "use": "sig", "alg": "EdDSA"}


class CountingJwks:
    """A JWKS loader serving the public half of ``keys``, counting its calls."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.calls = 0

    async def __call__(self) -> dict:
        self.calls += 1
        await asyncio.sleep(0)  # a fetch yields to the loop: concurrent verifications interleave
        return {"keys": [key.jwk() for key in self.keys]}


async def _status_of(verifier: JwtVerifier, token: str) -> int:
    try:
        await verifier.verify(token)
    except Problem as problem:
        return problem.status
    return 200


@pytest.fixture
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture
async def protected(tmp_path, mint):
    router = APIRouter()

    @router.get("/me")
    async def me(user: CurrentUser) -> dict:
        return {"id": user.id, "role": user.role, "email": user.email}

    @router.get("/admin")
    async def admin(user: AdminUser) -> dict:
        return {"id": user.id}

    @router.get("/internal")
    async def internal(caller: ServiceCaller) -> dict:
        return {"id": caller.id}

    app = create_app(settings=ServiceSettings(service_name="auth-test", data_dir=tmp_path), version="1",
                     routers=[router])
    provide(app, JwtVerifier, mint.verifier())
    async with RunningApp(app) as running:
        yield ApiClient(running.url)


def _assert_401(reply) -> None:
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert reply.headers["Content-Type"].startswith(PROBLEM_JSON)
    assert reply.body["type"] == "https://microshop.dev/problems/unauthorized"


async def test_minted_token_is_accepted(protected, mint):
    reply = await protected.get("/me", token=mint.token("user-7", email="ada@example.com"))
    assert reply.status == 200
    assert reply.body == {"id": "user-7", "role": "customer", "email": "ada@example.com"}


async def test_missing_malformed_and_expired_tokens_are_401(protected, mint):
    _assert_401(await protected.get("/me"))
    _assert_401(await protected.get("/me", headers={"Authorization": "Basic dXNlcjpwYXNz"}))
    _assert_401(await protected.get("/me", token="not-a-jwt"))
    expired = await protected.get("/me", token=mint.token(ttl=-120))
    _assert_401(expired)
    assert "expired" in expired.body["detail"]


async def test_wrong_audience_issuer_or_signature_is_401():
    key = SigningKey()
    verifier = JwtVerifier(CountingJwks(key))
    assert await _status_of(verifier, key.sign()) == 200
    assert await _status_of(verifier, key.sign(aud="someone-else")) == 401
    assert await _status_of(verifier, key.sign(iss="evil-issuer")) == 401
    forged = SigningKey(kid=key.kid)  # same kid, another private key
    assert await _status_of(verifier, forged.sign()) == 401


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "aud", "iss", "role"])
async def test_a_token_missing_a_required_claim_is_401(missing):
    key = SigningKey()
    now = int(time.time())
    claims = {"sub": "u-1", "role": "customer", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600}
    del claims[missing]
    token = jwt.encode(claims, key.key, algorithm=ALGORITHM, headers={"kid": key.kid})
    assert await _status_of(JwtVerifier(CountingJwks(key)), token) == 401


@pytest.mark.parametrize("claims", [
    {"sub": ""}, {"sub": "   "}, {"sub": 42}, {"sub": None}, {"role": "superuser"}, {"role": ["admin"]},
], ids=repr)
async def test_an_empty_subject_or_an_unknown_role_is_401_not_500(claims):
    key = SigningKey()
    assert await _status_of(JwtVerifier(CountingJwks(key)), key.sign(**claims)) == 401


async def test_verified_principal_carries_the_claims():
    key = SigningKey()
    principal = await JwtVerifier(CountingJwks(key)).verify(key.sign(sub="s-1", role="admin", email="a@b.c"))
    assert (principal.id, principal.role, principal.email) == ("s-1", "admin", "a@b.c")
    assert principal.is_admin and not principal.is_service


async def test_unknown_kid_reloads_the_jwks_once():
    old, new = SigningKey(), SigningKey()
    loader = CountingJwks(old)
    verifier = JwtVerifier(loader, min_refresh_interval=0)
    assert await _status_of(verifier, old.sign()) == 200
    assert await _status_of(verifier, old.sign()) == 200
    assert loader.calls == 1  # keys are cached

    loader.keys.append(new)  # users rotated its key
    # Many requests with the new kid at once: one reload serves them all.
    statuses = await asyncio.gather(*(_status_of(verifier, new.sign()) for _ in range(10)))
    assert statuses == [200] * 10
    assert loader.calls == 2


async def test_unknown_kids_do_not_hammer_the_loader():
    known, stranger = SigningKey(), SigningKey()
    loader = CountingJwks(known)
    verifier = JwtVerifier(loader, min_refresh_interval=60)
    assert await _status_of(verifier, known.sign()) == 200
    statuses = [await _status_of(verifier, SigningKey().sign()) for _ in range(5)]
    statuses += await asyncio.gather(*(_status_of(verifier, stranger.sign()) for _ in range(5)))
    assert statuses == [401] * 10
    assert loader.calls == 1


async def test_first_verification_loads_the_keys_whatever_the_throttle():
    # The throttle spaces out *re*loads; a verifier that never loaded has no keys at all. (A
    # throttle longer than the time since boot, which time.monotonic() counts from, showed it.)
    key = SigningKey()
    loader = CountingJwks(key)
    verifier = JwtVerifier(loader, min_refresh_interval=10**9)
    assert await _status_of(verifier, key.sign()) == 200
    assert loader.calls == 1


async def test_role_dependencies_give_403_to_others(protected, mint):
    customer, admin, service = (mint.token(role=role) for role in ("customer", "admin", "service"))
    forbidden = await protected.get("/admin", token=customer)
    assert forbidden.status == 403
    assert forbidden.body["type"] == "https://microshop.dev/problems/forbidden"
    assert (await protected.get("/admin", token=service)).status == 403
    assert (await protected.get("/admin", token=admin)).status == 200

    assert (await protected.get("/internal", token=customer)).status == 403
    assert (await protected.get("/internal", token=service)).status == 200
    assert (await protected.get("/internal", token=admin)).status == 200


async def test_http_jwks_loader_and_users_being_down(http_server, mint, http_session):
    async def jwks(request: web.Request) -> web.Response:
        return web.json_response(await mint.jwks())

    url = await http_server([web.get("/.well-known/jwks.json", jwks)])
    principal = await JwtVerifier(http_jwks_loader(url, http_session)).verify(mint.token("user-9"))
    assert principal.id == "user-9"

    down = JwtVerifier(http_jwks_loader(f"http://127.0.0.1:{free_port()}", http_session))
    with pytest.raises(Problem) as caught:
        await down.verify(mint.token())
    assert caught.value.status == 503
    assert caught.value.type.endswith("/auth-unavailable")


async def test_service_token_provider_caches_and_refetches_after_invalidate(http_server, http_session):
    requests: list[dict] = []

    async def issue(request: web.Request) -> web.Response:
        requests.append(await request.json())
        return web.json_response({"access_token": f"token-{len(requests)}", "expires_in": 900})

    url = await http_server([web.post("/service-tokens", issue)])
    provider = ServiceTokenProvider(url + "/", "orders", "s3cret", http_session)
    assert await provider() == "token-1"
    assert await provider() == "token-1"
    assert len(requests) == 1
    assert requests[0] == {"service": "orders", "secret": "s3cret"}

    provider.invalidate()
    assert await provider() == "token-2"
    assert await provider() == "token-2"
    assert len(requests) == 2


async def test_service_token_provider_refused(http_server, http_session):
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"detail": "bad secret"}, status=401)

    url = await http_server([web.post("/service-tokens", refuse)])
    with pytest.raises(aiohttp.ClientResponseError) as caught:
        await ServiceTokenProvider(url, "orders", "wrong", http_session)()
    assert caught.value.status == 401


class Clock:
    """Wall-clock seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class CountingDecode:
    """Counts the signature checks: a token served from the cache is not decoded again."""

    def __init__(self, monkeypatch) -> None:
        self.calls = 0
        decode = jwt.decode

        def counted(*args, **kwargs):
            self.calls += 1
            return decode(*args, **kwargs)

        monkeypatch.setattr(jwt, "decode", counted)


async def test_a_verified_token_is_not_checked_again_until_its_exp(monkeypatch):
    key, clock = SigningKey(), Clock()
    decodes = CountingDecode(monkeypatch)
    verifier = JwtVerifier(CountingJwks(key), clock=clock)
    exp = int(clock.now) + 600
    token = key.sign(sub="s-1", role="service", exp=exp)
    first = await verifier.verify(token)
    assert await verifier.verify(token) == first and decodes.calls == 1

    clock.now = exp - 1
    assert await verifier.verify(token) == first and decodes.calls == 1
    clock.now = exp  # never served beyond its exp: checked again, and refused
    assert await _status_of(verifier, token) == 401
    assert decodes.calls == 2


async def test_a_tampered_token_is_never_served_from_the_cache():
    key = SigningKey()
    verifier = JwtVerifier(CountingJwks(key))
    token = key.sign(sub="u-1", role="customer")
    assert await _status_of(verifier, token) == 200
    header, payload, signature = token.split(".")
    elevated = jwt.utils.base64url_encode(json.dumps(
        {**json.loads(jwt.utils.base64url_decode(payload)), "role": "admin"}).encode()).decode()
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    for tampered in (f"{header}.{elevated}.{signature}", f"{header}.{payload}.{flipped}", token + "x"):
        assert await _status_of(verifier, tampered) == 401, tampered
    assert await _status_of(verifier, token) == 200


async def test_reloading_the_keys_empties_the_cache_so_a_revoked_key_stops_verifying():
    old, new = SigningKey(), SigningKey()
    loader = CountingJwks(old)
    verifier = JwtVerifier(loader, min_refresh_interval=0)
    old_token = old.sign()
    assert await _status_of(verifier, old_token) == 200  # verified, and cached

    loader.keys = [new]  # users rotated its key and revoked the old one
    assert await _status_of(verifier, new.sign()) == 200  # the new kid reloads the keys
    assert await _status_of(verifier, old_token) == 401
    assert loader.calls == 3  # and the old token's unknown kid asked once more, in vain


async def test_the_cache_keeps_the_most_recently_used_tokens_only(monkeypatch):
    key = SigningKey()
    decodes = CountingDecode(monkeypatch)
    verifier = JwtVerifier(CountingJwks(key), cache_size=2)
    first, second, third = (key.sign(sub=f"u-{n}") for n in range(3))
    for token in (first, second, first, third):  # third evicts second, the least recently used
        await verifier.verify(token)
    assert decodes.calls == 3
    await verifier.verify(first)
    assert decodes.calls == 3
    await verifier.verify(second)
    assert decodes.calls == 4
