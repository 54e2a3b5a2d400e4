import pytest
from microshop_chassis.http_client import HttpSession
from microshop_chassis.testing import RunningApp
from microshop_users.bootstrap import build
from microshop_users.settings import UsersSettings


@pytest.fixture
def settings(database_url, nats_server, tmp_path) -> UsersSettings:
    return UsersSettings(
        database_url=database_url, nats_url=nats_server.url, data_dir=tmp_path,
        admin_email="admin@example.com", admin_password="admin-password", service_secret="s3cret",
    )


@pytest.fixture
async def users(settings):
    async with RunningApp(build(settings).app) as running:
        yield running


@pytest.fixture
async def http_session():
    """The pooled session another service's token and JWKS clients use, closed after the test."""
    session = HttpSession()
    yield session
    await session.close()
