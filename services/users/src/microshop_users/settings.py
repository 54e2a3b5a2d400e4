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
