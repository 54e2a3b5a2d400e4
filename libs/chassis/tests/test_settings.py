"""Settings from the environment: a service's own MICROSHOP_<SERVICE>_ prefix and the shared
MICROSHOP_ values."""

from __future__ import annotations

import os

import pytest
from microshop_chassis.db import Database
from microshop_chassis.settings import ServiceSettings
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


def test_defaults_without_environment():
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
    db = Database(url)
    try:
        await db.ping()
    finally:
        await db.dispose()
    assert (data_dir / "shop.db").exists()
