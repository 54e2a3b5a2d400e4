from microshop_chassis.settings import ServiceSettings, shared
from pydantic_settings import SettingsConfigDict


class PaymentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MICROSHOP_PAYMENTS_", extra="ignore", populate_by_name=True)

    service_name: str = "payments"
    port: int = 8104
    # The outside card processor (PSP); shared because the launcher also starts it.
    card_processor_url: str = shared("http://127.0.0.1:8090", "CARD_PROCESSOR_URL")
    # Deadline for one processor call, all retries included (a caller's X-Request-Timeout may shorten it).
    card_processor_timeout: float = 10.0
    # Extra attempts after a timeout, connection error or 503; always with the same Idempotency-Key.
    card_processor_retries: int = 3
