"""inventory's tables. Only inventory reads or writes them."""

from __future__ import annotations

from datetime import datetime

from microshop_chassis import db
from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def UtcDateTime() -> db.UtcDateTime:  # noqa: N802 - used like the column type it returns
    """The chassis timestamp, refusing naive datetimes instead of taking them as UTC: expiries are
    compared with the stored times, and a naive local time would move them by the host's offset."""
    return db.UtcDateTime(refuse_naive=True)


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "products"
    # The last line of defence against overselling: no bug can make stock negative or over-held.
    __table_args__ = (
        CheckConstraint("price_cents >= 0", name="ck_products_price"),
        CheckConstraint("reserved >= 0 AND reserved <= on_hand", name="ck_products_stock"),
        # Stock conservation, by construction: every unit on hand was received and not sold.
        CheckConstraint("sold_units >= 0", name="ck_products_sold"),
        CheckConstraint("on_hand = received_units - sold_units", name="ck_products_conservation"),
    )

    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    price_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    on_hand: Mapped[int] = mapped_column(Integer)
    reserved: Mapped[int] = mapped_column(Integer)
    # Running totals (migration 0002): units ever put in stock by admins (net of write-offs), and
    # units of committed reservations (net of restocks).
    received_units: Mapped[int] = mapped_column(Integer, server_default="0")
    sold_units: Mapped[int] = mapped_column(Integer, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Reservation(Base):
    __tablename__ = "reservations"
    # The sweeper looks for HELD rows past their expiry; operators list by status.
    __table_args__ = (Index("ix_reservations_status_expires_at", "status", "expires_at"),)

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    # None for a tombstone (a release that arrived first): it never held anything.
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ReservationLine(Base):
    __tablename__ = "reservation_lines"
    __table_args__ = (CheckConstraint("quantity > 0", name="ck_reservation_lines_quantity"),)

    order_id: Mapped[str] = mapped_column(String(64), ForeignKey("reservations.order_id"), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer)


products = Product.__table__
reservations = Reservation.__table__
reservation_lines = ReservationLine.__table__
