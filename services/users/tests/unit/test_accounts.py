"""users' account use cases against its real tables in SQLite memory: registration and its event,
logins, the admin list, and the admin created at start."""

import pytest
from microshop_chassis.contracts import EventType
from microshop_chassis.testing import outbox_events
from microshop_users.domain import AccountNotFound, EmailTaken, InvalidCredentials, Role, WeakPassword


async def test_register_stores_the_account_and_writes_user_registered(users):
    account = await users.register(email="  Ada@Example.COM ", password="lovelace-1815", name=" Ada ")
    assert (account.email, account.name, account.role) == ("ada@example.com", "Ada", Role.CUSTOMER)
    assert await users.get(account.id) == account
    [event] = await outbox_events(users.db)
    assert event["type"] == EventType.USER_REGISTERED and event["source"] == "users"
    assert event["data"] == {"user_id": account.id, "email": "ada@example.com", "name": "Ada", "role": "customer"}


async def test_an_email_registers_once_whatever_its_case(users):
    await users.register(email="ada@example.com", password="lovelace-1815", name="Ada")
    with pytest.raises(EmailTaken) as taken:
        await users.register(email="ADA@example.com", password="another-one", name="Ada again")
    assert str(taken.value) == "An account with e-mail ada@example.com already exists."
    assert vars(taken.value) == {}  # no extension members in the problem body
    assert len(await outbox_events(users.db)) == 1


async def test_authenticate_says_the_same_for_a_wrong_password_and_an_unknown_email(users):
    account = await users.register(email="ada@example.com", password="lovelace-1815", name="Ada")
    assert await users.authenticate(email="ADA@example.com", password="lovelace-1815") == account
    with pytest.raises(InvalidCredentials) as wrong:
        await users.authenticate(email="ada@example.com", password="not-her-password")
    with pytest.raises(InvalidCredentials) as unknown:
        await users.authenticate(email="bob@example.com", password="whatever-123")
    assert str(wrong.value) == str(unknown.value)


async def test_a_deleted_account_is_not_found(users):
    with pytest.raises(AccountNotFound):
        await users.get("no-such-id")


async def test_list_pages_oldest_first_with_the_total(users):
    created = [await users.register(email=f"u{i}@example.com", password="password-123", name=f"U{i}")
               for i in range(3)]
    page, total = await users.list(limit=2, offset=1)
    assert total == 3 and page == created[1:]


async def test_ensure_admin_creates_the_admin_once(users):
    await users.ensure_admin(email="Admin@Example.com", password="admin-password")
    await users.ensure_admin(email="admin@example.com", password="changed-since")
    [admin], total = await users.list(limit=10, offset=0)
    assert total == 1 and admin.role == Role.ADMIN and admin.name == "Administrator"
    assert (await users.authenticate(email="admin@example.com", password="admin-password")) == admin
    [event] = await outbox_events(users.db)
    assert event["data"]["role"] == "admin"


async def test_registering_a_taken_email_costs_one_hash_and_changes_nothing(users):
    await users.register(email="ada@example.com", password="lovelace-1815", name="Ada")
    hashes = []
    original_hash = users.passwords.hash

    async def counting_hash(password):
        hashes.append(password)
        return await original_hash(password)

    users.passwords.hash = counting_hash
    with pytest.raises(EmailTaken):
        await users.register(email="ada@example.com", password="another-pass-99", name="Mallory")
    await users.register(email="new@example.com", password="another-pass-99", name="New")
    assert len(hashes) == 2  # the same work whether the e-mail was taken or not
    account = await users.authenticate(email="ada@example.com", password="lovelace-1815")
    assert account.name == "Ada"


async def test_a_weak_password_is_refused_before_anything_is_stored(users):
    with pytest.raises(WeakPassword, match="too common"):
        await users.register(email="ada@example.com", password="password1", name="Ada")
    assert await users.list(limit=10, offset=0) == ([], 0)
