"""users over real HTTP, on SQLite and PostgreSQL, with a real NATS."""

import asyncio
import uuid

import jwt
import pytest
from microshop_chassis.auth import JwtVerifier, ServiceTokenProvider, http_jwks_loader
from microshop_chassis.testing import ApiClient, RunningApp, assert_event_matches_contract, stream_events
from microshop_users.bootstrap import build


async def register(api: ApiClient, email="ada@example.com", password="lovelace-1815", name="Ada"):
    return await api.post("/register", json={"email": email, "password": password, "name": name})


async def login_as(api: ApiClient, email="ada@example.com", password="lovelace-1815", **kw):
    return await api.post("/login", json={"email": email, "password": password}, **kw)


async def test_register_login_me(users):
    api = ApiClient(users.url)
    created = await register(api)
    assert created.status == 202
    assert created.body["email"] == "ada@example.com" and "id" not in created.body
    assert "password" not in str(created.body)

    login = await login_as(api, email="ADA@example.com")
    assert login.status == 200
    assert login.body["token_type"] == "bearer" and login.body["expires_in"] == 3600

    me = await api.get("/me", token=login.body["access_token"])
    assert me.status == 200
    assert me.body["email"] == "ada@example.com" and me.body["name"] == "Ada" and me.body["role"] == "customer"


async def test_registering_a_taken_email_answers_exactly_like_a_new_one_and_changes_nothing(users):
    api = ApiClient(users.url)
    new = await register(api, email="ada@example.com")
    taken = await register(api, email="Ada@Example.com", password="bramble-kettle-42", name="Mallory")
    assert new.status == taken.status == 202
    assert new.body == taken.body
    assert {k: v for k, v in new.headers.items() if k.lower() not in ("date", "x-request-id", "traceparent")} == \
        {k: v for k, v in taken.headers.items() if k.lower() not in ("date", "x-request-id", "traceparent")}
    assert (await login_as(api)).status == 200  # the owner's password still works
    assert (await login_as(api, password="bramble-kettle-42")).status == 401
    me = await api.get("/me", token=(await login_as(api)).body["access_token"])
    assert me.body["name"] == "Ada"


async def test_bad_input_is_422_problem(users):
    reply = await ApiClient(users.url).post("/register", json={"email": "nope", "password": "short", "name": ""})
    assert reply.status == 422
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    fields = {tuple(e["loc"])[-1] for e in reply.body["errors"]}
    assert {"email", "password", "name"} <= fields


@pytest.mark.parametrize("body", [
    {"email": "a" * 65 + "@example.com"},  # RFC 5321: a local part has at most 64 octets
    {"email": "ada\u0000@example.com"},
    {"name": "   "},  # stored as an empty name before
    {"name": "Ada\u0000"},
    {"name": "Ada\r\nBcc: everyone@example.com"},
    {"name": 42},  # no coercion
    {"admin": True},  # unknown fields are refused
], ids=repr)
async def test_malformed_registrations_are_422(users, body):
    reply = await ApiClient(users.url).post("/register", json={
        "email": "ada@example.com", "password": "lovelace-1815", "name": "Ada", **body})
    assert reply.status == 422, reply.body
    assert reply.body["type"].endswith("/validation-error")


@pytest.mark.parametrize(("password", "says"), [
    ("password1", "too common or too simple"), ("qwertyuiop", "too common or too simple"),
    ("ada.lovelace-1815", "e-mail address or your name"),
])
async def test_weak_passwords_are_422_with_the_reason(users, password, says):
    reply = await register(ApiClient(users.url), email="ada.lovelace@example.com", password=password)
    assert reply.status == 422
    assert reply.body["type"].endswith("/weak-password") and says in reply.body["detail"]


async def test_wrong_password_and_unknown_user_are_401(users):
    api = ApiClient(users.url)
    await register(api)
    wrong = await login_as(api, password="not-her-password")
    unknown = await login_as(api, email="bob@example.com", password="whatever-123")
    assert wrong.status == unknown.status == 401
    assert wrong.body["detail"] == unknown.body["detail"]  # no hint which one was wrong


async def test_me_needs_a_valid_token(users):
    api = ApiClient(users.url)
    assert (await api.get("/me")).status == 401
    assert (await api.get("/me", token="not.a.jwt")).status == 401


async def test_admin_is_seeded_and_lists_users(users):
    api = ApiClient(users.url)
    await register(api)
    login = await api.post("/login", json={"email": "admin@example.com", "password": "admin-password"})
    token = login.body["access_token"]
    assert (await api.get("/me", token=token)).body["role"] == "admin"
    listed = await api.get("/users", token=token, params={"limit": 1})
    assert listed.status == 200 and listed.body["total"] == 2 and len(listed.body["items"]) == 1
    customer = (await api.post("/login", json={"email": "ada@example.com", "password": "lovelace-1815"})).body
    assert (await api.get("/users", token=customer["access_token"])).status == 403


async def test_other_services_verify_tokens_with_the_jwks(users, http_session):
    api = ApiClient(users.url)
    await register(api)
    token = (await login_as(api)).body["access_token"]
    principal = await JwtVerifier(http_jwks_loader(users.url, http_session)).verify(token)
    me = await api.get("/me", token=token)
    assert principal.id == me.body["id"] and principal.role == "customer"


async def test_service_tokens_need_the_secret(users, http_session):
    good = await ServiceTokenProvider(users.url, "orders", "s3cret", http_session)()
    principal = await JwtVerifier(http_jwks_loader(users.url, http_session)).verify(good)
    assert principal.is_service and principal.id == "service:orders"
    bad = await ApiClient(users.url).post("/service-tokens", json={"service": "orders", "secret": "guess"})
    assert bad.status == 401


async def test_registration_publishes_user_registered_matching_its_contract(users, settings):
    api = ApiClient(users.url)
    await register(api, email="events@example.com")
    token = (await login_as(api, email="events@example.com")).body["access_token"]
    user_id = (await api.get("/me", token=token)).body["id"]
    [event] = await stream_events(
        settings.nats_url, "events.users.UserRegistered", match=lambda e: e["data"]["user_id"] == user_id,
    )
    assert_event_matches_contract(event)
    assert event["data"] == {"user_id": user_id, "email": "events@example.com", "name": "Ada", "role": "customer"}


async def test_failed_logins_are_limited_per_account_even_for_the_right_password(users):
    api = ApiClient(users.url)
    await register(api)
    for n in range(5):  # the default: 5 failures a minute per account
        assert (await login_as(api, password=f"guess-{n}")).status == 401
    refused = await login_as(api)  # the right password, after the limit: refused all the same
    assert refused.status == 429
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert refused.body["type"].endswith("/rate-limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Policy"] == '"login-account";q=5;w=60'
    assert refused.headers["RateLimit"] == f'"login-account";r=0;t={refused.headers["Retry-After"]}'


async def test_failed_logins_are_limited_per_client_address_behind_the_gateway(users):
    api = ApiClient(users.url)
    await register(api)
    attacker = {"X-Forwarded-For": "203.0.113.9"}  # as the gateway (on loopback, trusted) forwards it
    for n in range(30):
        reply = await login_as(api, email=f"nobody-{n}@example.com", password="guess-guess", headers=attacker)
        assert reply.status == 401
    assert (await login_as(api, email="other@example.com", password="guess", headers=attacker)).status == 429
    # Another client is not affected, nor are successful logins counted.
    assert (await login_as(api, headers={"X-Forwarded-For": "198.51.100.1"})).status == 200
    # A client cannot escape by writing its own X-Forwarded-For: only the last entry is the gateway's.
    spoofed = {"X-Forwarded-For": "1.2.3.4, 203.0.113.9"}
    assert (await login_as(api, email="x@example.com", password="guess", headers=spoofed)).status == 429


async def test_registrations_are_limited_per_client_address(settings):
    settings.registrations_per_address = 2
    async with RunningApp(build(settings).app) as users:
        api = ApiClient(users.url)
        for n in range(2):
            assert (await register(api, email=f"u{n}@example.com")).status == 202
        refused = await register(api, email="u9@example.com")
        assert refused.status == 429 and refused.headers["RateLimit-Policy"] == '"register-address";q=2;w=60'


async def test_a_flood_of_logins_is_refused_at_once_beyond_the_hashing_queue(settings):
    settings.hashing_slots, settings.hashing_queue = 1, 2
    async with RunningApp(build(settings).app) as users:
        api = ApiClient(users.url)
        replies = await asyncio.gather(*(
            login_as(api, email=f"{uuid.uuid4().hex}@example.com", password="guess-guess",
                     headers={"X-Forwarded-For": f"203.0.113.{n}"})
            for n in range(40)))
        statuses = [reply.status for reply in replies]
        assert statuses.count(503) >= 20 and set(statuses) == {401, 503}
        busy = next(reply for reply in replies if reply.status == 503)
        assert busy.body["type"].endswith("/overloaded") and busy.headers["Retry-After"] == "1"


async def test_an_admin_rotates_the_signing_key_and_old_tokens_still_verify(settings, http_session):
    settings.signing_key_publish_ahead_seconds = 0  # the new key signs at once (the unit tests wait)
    async with RunningApp(build(settings).app) as users:
        await _rotate_and_verify(users, settings, http_session)


async def _rotate_and_verify(users, settings, http_session):
    api = ApiClient(users.url)
    admin = (await login_as(api, email="admin@example.com", password="admin-password")).body["access_token"]
    await register(api)
    customer = (await login_as(api)).body["access_token"]
    assert (await api.post("/admin/signing-keys/rotate", token=customer)).status == 403
    assert (await api.post("/admin/signing-keys/rotate")).status == 401
    before = await api.get("/.well-known/jwks.json")
    rotated = await api.post("/admin/signing-keys/rotate", token=admin)
    assert rotated.status == 201
    [old_kid] = [key["kid"] for key in before.body["keys"]]
    assert rotated.body["published"] == [old_kid, rotated.body["kid"]]
    keys_dir = settings.data_dir / "keys" / "users"
    assert (keys_dir / f"{rotated.body['kid']}.pem").stat().st_mode & 0o777 == 0o600

    verifier = JwtVerifier(http_jwks_loader(users.url, http_session))
    assert (await verifier.verify(customer)).role == "customer"  # signed by the old key
    fresh = (await login_as(api)).body["access_token"]
    assert jwt.get_unverified_header(fresh)["kid"] == rotated.body["kid"]
    assert (await api.get("/me", token=fresh)).status == 200
    assert (await api.get("/me", token=customer)).status == 200
