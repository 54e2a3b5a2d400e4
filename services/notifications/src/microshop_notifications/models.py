"""notifications' tables. Only notifications reads or writes them."""

from datetime import datetime

from microshop_chassis.db import UtcDateTime
from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Notification(Base):
    """One e-mail owed to someone because of one event."""

    __tablename__ = "notifications"
    __table_args__ = (
        # Second guard after the inbox: one mail of each kind per order, even if an order's event
        # were ever published twice under different event ids. (NULL order ids never collide.)
        UniqueConstraint("type", "order_id", name="uq_notifications_type_order"),
        Index("ix_notifications_due", "status", "next_attempt_at"),
        Index("ix_notifications_user", "user_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(20))
    user_id: Mapped[str] = mapped_column(String(100))
    order_id: Mapped[str | None] = mapped_column(String(100))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    # When the worker may try (again); also its lease while a send is in flight.
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
