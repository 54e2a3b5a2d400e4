"""Settings from the environment: a service's own MICROSHOP_<SERVICE>_ prefix and the shared
MICROSHOP_ values."""

from __future__ import annotations

import os
import stat

import pytest
from microshop_chassis.db import Database
from microshop_chassis.settings import ServiceSettings
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict


class ShopSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MICROSHOP_SHOP_", extra="ignore", populate_by_name=True)

    service_name: str = "shop"
    port: int = 8199
    checkout_wait_seconds: float = 10.0


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("MICROSHOP_"):
            monkeypatch.delenv(name)


def test_own_prefix_and_shared_values_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MICROSHOP_SHOP_PORT", "9123")
    monkeypatch.setenv("MICROSHOP_SHOP_DATABASE_URL", "postgresql+asyncpg://db.internal/shop")
    monkeypatch.setenv("MICROSHOP_SHOP_CHECKOUT_WAIT_SECONDS", "2.5")
    monkeypatch.setenv("MICROSHOP_NATS_URL", "nats://broker.internal:4222")
    monkeypatch.setenv("MICROSHOP_HTTP_TIMEOUT", "1.5")
    monkeypatch.setenv("MICROSHOP_USERS_URL", "http://users.internal:8101")
    monkeypatch.setenv("MICROSHOP_DATA_DIR", str(tmp_path / "shared-data"))
    monkeypatch.setenv("MICROSHOP_LOG_LEVEL", "DEBUG")
    # Other services' values and unprefixed per-service names are not this service's.
    monkeypatch.setenv("MICROSHOP_ORDERS_PORT", "1111")
    monkeypatch.setenv("MICROSHOP_PORT", "2222")

    settings = ShopSettings()
    assert settings.port == 9123
    assert settings.database_url == "postgresql+asyncpg://db.internal/shop"
    assert settings.resolved_database_url() == "postgresql+asyncpg://db.internal/shop"
    assert settings.checkout_wait_seconds == 2.5
    assert settings.nats_url == "nats://broker.internal:4222"
    assert settings.http_timeout == 1.5
    assert settings.users_url == "http://users.internal:8101"
    assert settings.data_dir == tmp_path / "shared-data"
    assert settings.log_level == "DEBUG"
    assert settings.service_name == "shop"


def test_defaults_without_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default data dir is relative: its secret is made there
    settings = ShopSettings()
    assert settings.port == 8199
    assert settings.nats_url == "nats://127.0.0.1:14222"
    assert settings.http_timeout == 5.0
    assert settings.database_url == ""


def test_fields_can_be_given_by_name(tmp_path):
    settings = ShopSettings(nats_url="nats://given:1", data_dir=tmp_path, port=1234, service_secret="x")
    assert (settings.nats_url, settings.data_dir, settings.port, settings.service_secret) == (
        "nats://given:1", tmp_path, 1234, "x"
    )


async def test_database_url_defaults_to_a_sqlite_file_in_the_data_dir(monkeypatch, tmp_path):
    data_dir = tmp_path / "not" / "yet" / "there"
    monkeypatch.setenv("MICROSHOP_DATA_DIR", str(data_dir))
    url = ShopSettings().resolved_database_url()
    assert url == f"sqlite+aiosqlite:///{(data_dir / 'shop.db').resolve()}"
    assert data_dir.is_dir()  # created, so SQLite can make its file there
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700  # and readable by this user only
    db = Database(url)
    try:
        await db.ping()
    finally:
        await db.dispose()
    assert (data_dir / "shop.db").exists()


def test_in_local_mode_a_missing_secret_is_made_once_per_data_dir_and_kept_private(tmp_path):
    first, second = ShopSettings(data_dir=tmp_path), ShopSettings(data_dir=tmp_path)
    secret_file = tmp_path / "secrets" / "service-secret"
    assert first.local_mode
    assert first.service_secret == second.service_secret == secret_file.read_text()
    assert len(first.service_secret) >= 32 and first.service_secret != "local-dev-service-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_file.parent.stat().st_mode) == 0o700
    assert first.service_secret not in repr(first)
    assert ShopSettings(data_dir=tmp_path / "other").service_secret != first.service_secret


@pytest.mark.parametrize("where", [{"environment": "production"}, {"host": "0.0.0.0"}, {"host": "shop.internal"}])
def test_outside_local_mode_a_service_without_a_secret_refuses_to_start(tmp_path, where):
    with pytest.raises(ValidationError, match="MICROSHOP_SERVICE_SECRET is not set"):
        ShopSettings(data_dir=tmp_path, **where)
    assert not (tmp_path / "secrets").exists()
    assert ShopSettings(data_dir=tmp_path, service_secret="configured", **where).service_secret == "configured"


def test_the_secret_and_environment_come_from_the_shared_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROSHOP_ENVIRONMENT", "staging")
    monkeypatch.setenv("MICROSHOP_SERVICE_SECRET", "from-the-environment")
    settings = ShopSettings(data_dir=tmp_path)
    assert not settings.local_mode and settings.service_secret == "from-the-environment"
