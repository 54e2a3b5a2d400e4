"""The API's answers."""

from datetime import datetime

from pydantic import BaseModel, Field

from .domain import DeliveryStatus, NotificationType


class NotificationSummary(BaseModel):
    id: str
    type: NotificationType
    order_id: str | None
    subject: str
    status: DeliveryStatus
    created_at: datetime


class NotificationDetail(NotificationSummary):
    user_id: str
    recipient: str
    body: str
    attempts: int = Field(description="Delivery attempts that failed so far.")
    last_error: str | None = Field(description="Why the last attempt failed; shown to admins only.")
    sent_at: datetime | None
