"""payments' tables. Only payments reads or writes them. No card number or CVC is ever stored."""

from datetime import datetime

from microshop_chassis.db import UtcDateTime
from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Payment(Base):
    """At most one payment per order: the unique order_id decides between concurrent charges.

    The row is written before the processor is called (PENDING, holding the idempotency key every
    processor call for the order uses); a refund of an order without a row leaves a VOIDED one.
    """

    __tablename__ = "payments"
    __table_args__ = (Index("ix_payments_customer_status", "customer_id", "status"),)  # velocity counts

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[str] = mapped_column(String(100))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20), index=True)
    card_brand: Mapped[str | None] = mapped_column(String(20))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    decline_code: Mapped[str | None] = mapped_column(String(50))
    processor_charge_id: Mapped[str | None] = mapped_column(String(64))
    processor_refund_id: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))  # NULL for rows older than 0002
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class LedgerEntry(Base):
    """Money that moved: +amount for a capture, -amount for a refund. Declines move nothing."""

    __tablename__ = "ledger_entries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(36), ForeignKey("payments.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class CardUse(Base):
    """A card a customer tokenized lately (velocity limits), known by its last four digits only:
    enough to tell cards apart for counting (two cards sharing them count as one), never a number."""

    __tablename__ = "card_uses"

    customer_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    card_last4: Mapped[str] = mapped_column(String(4), primary_key=True)
    last_used_at: Mapped[datetime] = mapped_column(UtcDateTime())
