from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from microshop_chassis.settings import ServiceSettings, shared


class StorefrontSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MICROSHOP_STOREFRONT_", extra="ignore", populate_by_name=True)

    service_name: str = "storefront"
    port: int = 8000
    # The one API the storefront calls: the gateway's public one (the launcher sets it).
    gateway_url: str = shared("http://127.0.0.1:8080", "GATEWAY_URL")
    # Where a customer reads the e-mails the shop sent (the launcher's mail catcher); empty: no link.
    mail_catcher_url: str = shared("http://127.0.0.1:8025", "MAIL_CATCHER_URL")
    # The key the session and cart cookies are signed with (MICROSHOP_STOREFRONT_SECRET). Empty:
    # a key generated once in <data dir>/keys/storefront/cookie-secret (0600); replicas must share it.
    secret: str = Field("", repr=False)
    keys_dir: Path | None = None
    # Deadline of one call to the gateway, in seconds (the chassis retries safe ones within it).
    gateway_timeout: float = 10.0
    # Secure cookies: "auto" when the request came over TLS (or a proxy says it did), "always", "never".
    secure_cookies: str = "auto"
    # How long a login lasts in the browser at most (the token itself says when it expires).
    session_max_age_seconds: int = 3600
    cart_max_age_seconds: int = 30 * 24 * 3600
    # How often the order page asks for its status while the checkout saga runs, in milliseconds.
    order_poll_ms: int = 1000

    def resolved_keys_dir(self) -> Path:
        return self.keys_dir or self.data_dir / "keys" / "storefront"
