"""Tokens users issues verify with the JWKS it publishes, the way every other service checks them;
the private keys are files only users' account can read, and rotate."""

import os
import stat

import pytest
from microshop_chassis.auth import JwtVerifier
from microshop_chassis.errors import Problem
from microshop_users.domain import UnknownServiceCredentials
from microshop_users.keys import RETIREMENT_LEEWAY_SECONDS, KeyFileError, SigningKeys

TTL = 3600


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


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


async def test_the_private_key_is_a_file_only_users_can_read(tmp_path):
    os.umask(0o022)  # a usual umask: the modes below must not depend on it
    directory = tmp_path / "data" / "keys" / "users"
    keys = SigningKeys(directory, max_token_ttl=TTL)
    await keys.load()
    kid = keys.issuer.kid
    assert mode(directory) == 0o700 and mode(directory.parent) == 0o700
    assert sorted(p.name for p in directory.iterdir()) == [f"{kid}.json", f"{kid}.pem"]
    assert mode(directory / f"{kid}.pem") == mode(directory / f"{kid}.json") == 0o600
    assert b"PRIVATE KEY" in (directory / f"{kid}.pem").read_bytes()


@pytest.mark.parametrize("readable", [0o640, 0o604])
async def test_a_key_file_others_can_read_stops_the_start(tmp_path, readable):
    first = SigningKeys(tmp_path / "keys", max_token_ttl=TTL)
    await first.load()
    pem = tmp_path / "keys" / f"{first.issuer.kid}.pem"
    pem.chmod(readable)
    with pytest.raises(KeyFileError, match="accessible by group or others"):
        await SigningKeys(tmp_path / "keys", max_token_ttl=TTL).load()


async def test_a_keys_directory_others_can_enter_stops_the_start(tmp_path):
    (tmp_path / "keys").mkdir(mode=0o755)
    (tmp_path / "keys").chmod(0o755)
    with pytest.raises(KeyFileError):
        await SigningKeys(tmp_path / "keys", max_token_ttl=TTL).load()


async def test_the_signing_key_outlives_a_restart_and_replicas_share_it(tmp_path):
    first, second = SigningKeys(tmp_path / "keys", max_token_ttl=TTL), SigningKeys(tmp_path / "keys", max_token_ttl=TTL)
    await first.load()
    await second.load()
    assert first.issuer.kid == second.issuer.kid
    assert [key["kid"] for key in (await second.jwks())["keys"]] == [first.issuer.kid]


async def test_two_replicas_creating_at_once_end_up_signing_with_the_same_key(tmp_path):
    clock = Clock()
    one, two = (SigningKeys(tmp_path / "keys", max_token_ttl=TTL, clock=clock) for _ in range(2))
    await one.load()
    await two.load()
    two._create(signs_from=clock.now)  # noqa: SLF001 - as if two had found the directory empty too
    assert one.issuer.kid == two.issuer.kid
    assert len((await one.jwks())["keys"]) == 2  # the loser's tokens (if any) still verify


async def test_rotation_keeps_old_tokens_valid_until_they_expire_then_drops_the_old_key(tmp_path):
    clock = Clock()
    keys = SigningKeys(tmp_path / "keys", max_token_ttl=TTL, clock=clock)
    other_replica = SigningKeys(tmp_path / "keys", max_token_ttl=TTL, clock=clock)
    await keys.load()
    await other_replica.load()
    old_kid = keys.issuer.kid
    old_token = keys.issuer.issue(subject="u-1", role="customer", ttl=TTL)

    clock.now += 10
    new_kid = keys.rotate().kid
    assert new_kid != old_kid
    # Published at once, so every verifier can know it before the first token carries it...
    assert [key["kid"] for key in (await other_replica.jwks())["keys"]] == [old_kid, new_kid]
    assert keys.issuer.kid == other_replica.issuer.kid == old_kid
    clock.now += keys.publish_ahead  # ...and signing from publish_ahead on, in every replica
    assert keys.issuer.kid == other_replica.issuer.kid == new_kid
    verifier = JwtVerifier(keys.jwks, min_refresh_interval=0)
    assert (await verifier.verify(old_token)).id == "u-1"  # signed before: still valid
    new_token = other_replica.issuer.issue(subject="u-2", role="customer", ttl=TTL)
    assert (await verifier.verify(new_token)).id == "u-2"

    clock.now += TTL + RETIREMENT_LEEWAY_SECONDS - 1
    assert [key["kid"] for key in (await keys.jwks())["keys"]] == [old_kid, new_kid]
    clock.now += 1  # every token the old key signed has expired
    assert [key["kid"] for key in (await keys.jwks())["keys"]] == [new_kid]
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [f"{new_kid}.json", f"{new_kid}.pem"]
    assert [key["kid"] for key in (await other_replica.jwks())["keys"]] == [new_kid]
    with pytest.raises(Problem) as refused:  # a fresh verifier (another service) no longer knows it
        await JwtVerifier(keys.jwks).verify(old_token)
    assert refused.value.status == 401


def test_nothing_is_signed_before_the_keys_are_loaded(tmp_path):
    with pytest.raises(RuntimeError):
        SigningKeys(tmp_path / "keys", max_token_ttl=TTL).issuer  # noqa: B018 - the property is what is tested
