from microshop_chassis.settings import ServiceSettings, shared
from pydantic_settings import SettingsConfigDict


class NotificationsSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="MICROSHOP_NOTIFICATIONS_", extra="ignore", populate_by_name=True
    )

    service_name: str = "notifications"
    port: int = 8105
    # The SMTP server is shared by the whole system (the mail catcher in local mode).
    smtp_host: str = shared("127.0.0.1", "SMTP_HOST")
    smtp_port: int = shared(1025, "SMTP_PORT")
    # Upper bound for connecting, and for sending one message, in seconds.
    smtp_timeout_seconds: float = 10.0
    # A connection stays open this long after its batch, for the next one (0: one per batch).
    smtp_keep_alive_seconds: float = 5.0
    mail_from: str = "microshop <shop@microshop.local>"
    # The delivery worker wakes after every recorded event, and at least this often.
    delivery_interval_seconds: float = 2.0
    delivery_batch_size: int = 10
    # After a failed attempt a message waits base * 2^(attempts-1) seconds, at most the cap.
    retry_backoff_seconds: float = 1.0
    retry_backoff_max_seconds: float = 300.0

    @property
    def delivery_lease_seconds(self) -> float:
        """How long the delivery worker holds the rest of its batch, renewed before each send:
        longer than connecting plus one send timing out, so a live worker never loses it, and
        short, so a killed replica's rows are due again for another soon (30 s by default)."""
        return self.smtp_timeout_seconds * 3
