from pathlib import Path

from microshop_chassis.settings import ServiceSettings
from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict


class UsersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MICROSHOP_USERS_", extra="ignore", populate_by_name=True)

    service_name: str = "users"
    port: int = 8101
    token_ttl_seconds: int = 3600
    service_token_ttl_seconds: int = 900
    # The first admin, created at start when missing.
    admin_email: str = Field("admin@microshop.local", validation_alias=AliasChoices("MICROSHOP_ADMIN_EMAIL"))
    admin_password: str = Field("microshop-admin", validation_alias=AliasChoices("MICROSHOP_ADMIN_PASSWORD"))
    # Where the private signing keys live (0700 directory, 0600 files); empty: <data dir>/keys/users.
    # Replicas share it (a shared volume), as they share the database.
    keys_dir: Path | None = None
    # A rotated key is in the JWKS this long before it signs (verifiers re-fetch at most every 5 s).
    signing_key_publish_ahead_seconds: float = 10.0

    # Rate limits, per instance (replicas each count their own), each a quota per window in seconds.
    # Only failed logins count; a login over either quota is refused before its password is hashed.
    login_failures_per_account: int = 5
    login_failures_per_address: int = 30
    login_window_seconds: int = 60
    # Generous: locally every client is the loopback address (bench and chaos register dozens at once).
    registrations_per_address: int = 100
    registration_window_seconds: int = 60
    # Peers whose X-Forwarded-For's last entry is taken as the client's address (the gateway, which
    # runs on loopback locally). Anyone else's X-Forwarded-For is ignored.
    trusted_proxies: list[str] = ["127.0.0.1/32", "::1/128"]

    # Password hashes computed at once (each 19 MiB and a core) and waiting beyond which a login or
    # registration is refused at once with 503 + Retry-After instead of queueing.
    hashing_slots: int = 2
    hashing_queue: int = 16

    def resolved_keys_dir(self) -> Path:
        return self.keys_dir or self.data_dir / "keys" / "users"
