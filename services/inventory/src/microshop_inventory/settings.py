from microshop_chassis.settings import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class InventorySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MICROSHOP_INVENTORY_", extra="ignore", populate_by_name=True)

    service_name: str = "inventory"
    port: int = 8102
    # How long a HELD reservation keeps its units before the sweeper gives them back.
    reservation_ttl_seconds: int = Field(600, ge=0)
    # How often the sweeper looks for HELD reservations past their expiry.
    sweep_interval_seconds: float = Field(5.0, gt=0)
    # Reservations expired per transaction, so one sweep never holds a long write lock.
    sweep_batch_size: int = Field(500, ge=1)
