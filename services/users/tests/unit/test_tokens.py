"""Tokens users issues verify with the JWKS it publishes, the way every other service checks them."""

import pytest
from microshop_chassis.auth import JwtVerifier
from microshop_users.domain import UnknownServiceCredentials
from microshop_users.security import SigningKeys


async def test_a_login_token_verifies_with_the_published_keys(users):
    account = await users.register(email="ada@example.com", password="lovelace-1815", name="Ada")
    issued = await users.login(email="ada@example.com", password="lovelace-1815")
    assert issued.expires_in == 3600
    principal = await JwtVerifier(users.jwks).verify(issued.access_token)
    assert (principal.id, principal.role, principal.email, principal.name) == (account.id, "customer",
                                                                               "ada@example.com", "Ada")


async def test_a_service_token_needs_the_shared_secret(users, service_secret):
    issued = users.issue_service_token(service="orders", secret=service_secret)
    principal = await JwtVerifier(users.jwks).verify(issued.access_token)
    assert principal.is_service and principal.id == "service:orders" and issued.expires_in == 900
    with pytest.raises(UnknownServiceCredentials):
        users.issue_service_token(service="orders", secret="guess")


async def test_the_signing_key_outlives_a_restart(db):
    first, second = SigningKeys(db), SigningKeys(db)
    await first.load()
    await second.load()
    assert first.issuer.kid == second.issuer.kid
    assert [key["kid"] for key in (await second.jwks())["keys"]] == [first.issuer.kid]


def test_nothing_is_signed_before_the_key_is_loaded(db):
    with pytest.raises(RuntimeError):
        SigningKeys(db).issuer  # noqa: B018 - the property is what is tested
