"""payments, ledger entries, outbox

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Rollout: expand.
"""
import sqlalchemy as sa
from alembic import op
from microshop_chassis.migrations import create_outbox_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False, unique=True),
        sa.Column("customer_id", sa.String(100), nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("card_brand", sa.String(20), nullable=True),
        sa.Column("card_last4", sa.String(4), nullable=True),
        sa.Column("decline_code", sa.String(50), nullable=True),
        sa.Column("processor_charge_id", sa.String(64), nullable=True),
        sa.Column("processor_refund_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_payments_status", "payments", ["status"])
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("payment_id", sa.String(36), sa.ForeignKey("payments.id"), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ledger_entries_payment_id", "ledger_entries", ["payment_id"])
    create_outbox_table()


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_index("ix_ledger_entries_payment_id", "ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_index("ix_payments_status", "payments")
    op.drop_table("payments")
