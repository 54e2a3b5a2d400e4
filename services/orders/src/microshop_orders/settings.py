from microshop_chassis.settings import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class OrdersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MICROSHOP_ORDERS_", extra="ignore", populate_by_name=True)

    service_name: str = "orders"
    port: int = 8103
    # How long POST /orders waits for the saga before answering 202 with the order still PENDING.
    checkout_wait_seconds: float = 10.0
    # A process driving a saga holds it this long without progress before another may take it over.
    saga_lease_seconds: float = 10.0
    # How often open sagas whose lease ran out are looked for and driven on.
    recovery_interval_seconds: float = 1.0
    # A checkout not past its charge by then is compensated (stock released, any charge voided)
    # and REJECTED, instead of being retried for ever. Keep it below inventory's reservation TTL.
    saga_deadline_seconds: float = 60.0
    # How long a price inventory quoted is used for further checkouts before it is asked again: a
    # price changed in the catalog applies to checkouts this much later at the latest. 0: every
    # checkout asks inventory (one request more per checkout).
    price_quote_seconds: float = Field(2.0, ge=0)
    # Deadline of one call to payments (which itself waits on the card processor).
    payments_timeout: float = 10.0
