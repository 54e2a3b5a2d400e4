"""users' own database in SQLite memory through the real use cases and signing keys (files in the
test's directory): accounts, logins and tokens in milliseconds, with no server, broker or
process. (users calls no other service, so there is nothing over the network to fake.)"""

from __future__ import annotations

import pytest
from microshop_chassis.testing import memory_database
from microshop_users.keys import SigningKeys
from microshop_users.models import Base
from microshop_users.security import Passwords
from microshop_users.service import Users

SERVICE_SECRET = "s3cret"


@pytest.fixture
def passwords() -> Passwords:
    return Passwords()


@pytest.fixture
async def db():
    database = await memory_database(Base.metadata)
    yield database
    await database.dispose()


@pytest.fixture
async def users(db, passwords, tmp_path) -> Users:
    """The use cases as users' start leaves them: the signing key loaded."""
    keys = SigningKeys(tmp_path / "keys", max_token_ttl=3600)
    await keys.load()
    return Users(db, passwords, keys, token_ttl=3600, service_token_ttl=900, service_secret=SERVICE_SECRET)


@pytest.fixture
def service_secret() -> str:
    return SERVICE_SECRET
