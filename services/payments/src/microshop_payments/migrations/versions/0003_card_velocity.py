"""card velocity: the cards each customer used lately, and an index to count their declines

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-10

Rollout: expand.
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "card_uses",
        sa.Column("customer_id", sa.String(100), primary_key=True),
        sa.Column("card_last4", sa.String(4), primary_key=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_payments_customer_status", "payments", ["customer_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_payments_customer_status", table_name="payments")
    op.drop_table("card_uses")
