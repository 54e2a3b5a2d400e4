"""orders, order lines, outbox

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
        "orders",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False, index=True),
        sa.Column("customer_email", sa.String(320), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("reason", sa.String(300)),
        sa.Column("total_cents", sa.Integer, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("card_token", sa.String(100), nullable=False),
        sa.Column("card_brand", sa.String(20), nullable=False),
        sa.Column("card_last4", sa.String(4), nullable=False),
        sa.Column("payment_id", sa.String(36)),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("request_fingerprint", sa.String(64), nullable=False),
        sa.Column("saga_step", sa.String(30), nullable=False, index=True),
        sa.Column("saga_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("saga_last_error", sa.String(500)),
        sa.Column("saga_lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("customer_id", "idempotency_key", name="uq_orders_customer_key"),
    )
    op.create_table(
        "order_lines",
        sa.Column("order_id", sa.String(36), sa.ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price_cents", sa.Integer, nullable=False),
    )
    create_outbox_table()


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("order_lines")
    op.drop_table("orders")
