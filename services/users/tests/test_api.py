"""users over real HTTP, on SQLite and PostgreSQL, with a real NATS."""

from microshop_chassis.auth import JwtVerifier, ServiceTokenProvider, http_jwks_loader
from microshop_chassis.testing import ApiClient, assert_event_matches_contract, stream_events


async def register(api: ApiClient, email="ada@example.com", password="lovelace-1815", name="Ada"):
    return await api.post("/register", json={"email": email, "password": password, "name": name})


async def test_register_login_me(users):
    api = ApiClient(users.url)
    created = await register(api)
    assert created.status == 201
    assert created.body["email"] == "ada@example.com" and created.body["name"] == "Ada"
    assert "password" not in str(created.body)

    login = await api.post("/login", json={"email": "ADA@example.com", "password": "lovelace-1815"})
    assert login.status == 200
    assert login.body["token_type"] == "bearer" and login.body["expires_in"] == 3600

    me = await api.get("/me", token=login.body["access_token"])
    assert me.status == 200
    assert me.body == {"id": created.body["id"], "email": "ada@example.com", "name": "Ada", "role": "customer"}


async def test_duplicate_email_is_409_problem(users):
    api = ApiClient(users.url)
    assert (await register(api)).status == 201
    again = await register(api, email="Ada@Example.com")
    assert again.status == 409
    assert again.headers["Content-Type"].startswith("application/problem+json")
    assert again.body["type"].endswith("/email-taken") and again.body["status"] == 409


async def test_bad_input_is_422_problem(users):
    reply = await ApiClient(users.url).post("/register", json={"email": "nope", "password": "short", "name": ""})
    assert reply.status == 422
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    fields = {tuple(e["loc"])[-1] for e in reply.body["errors"]}
    assert {"email", "password", "name"} <= fields


async def test_wrong_password_and_unknown_user_are_401(users):
    api = ApiClient(users.url)
    await register(api)
    wrong = await api.post("/login", json={"email": "ada@example.com", "password": "not-her-password"})
    unknown = await api.post("/login", json={"email": "bob@example.com", "password": "whatever-123"})
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
    created = await register(api)
    token = (await api.post("/login", json={"email": "ada@example.com", "password": "lovelace-1815"})).body
    principal = await JwtVerifier(http_jwks_loader(users.url, http_session)).verify(token["access_token"])
    assert principal.id == created.body["id"] and principal.role == "customer"


async def test_service_tokens_need_the_secret(users, http_session):
    good = await ServiceTokenProvider(users.url, "orders", "s3cret", http_session)()
    principal = await JwtVerifier(http_jwks_loader(users.url, http_session)).verify(good)
    assert principal.is_service and principal.id == "service:orders"
    bad = await ApiClient(users.url).post("/service-tokens", json={"service": "orders", "secret": "guess"})
    assert bad.status == 401


async def test_registration_publishes_user_registered_matching_its_contract(users, settings):
    created = await register(ApiClient(users.url), email="events@example.com")
    [event] = await stream_events(
        settings.nats_url, "events.users.UserRegistered",
        match=lambda e: e["data"]["user_id"] == created.body["id"],
    )
    assert_event_matches_contract(event)
    assert event["data"] == {"user_id": created.body["id"], "email": "events@example.com", "name": "Ada",
                             "role": "customer"}
