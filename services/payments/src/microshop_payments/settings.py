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
    # Calls to the processor one replica has in flight at most (its connection pool), and how long
    # one more waits for a free connection before it is refused (503). A processor that limits
    # each client, or a slow one, then caps what one replica can charge: more replicas charge more.
    card_processor_connections: int = 100
    card_processor_queue_seconds: float = 0.2
    # Velocity limits against card testing (many stolen cards tried from one account), per customer.
    # Cards are told apart by their last four digits, so a customer paying again and again with the
    # same card (the bench, the load generator) never meets them. At most this many different cards
    # in the window (the next new one is refused before the processor is called)...
    velocity_max_cards: int = 5
    velocity_cards_window_seconds: float = 600.0
    # ...and once this many different cards were declined in the window, every attempt is refused.
    velocity_max_declined_cards: int = 3
    velocity_declines_window_seconds: float = 3600.0
