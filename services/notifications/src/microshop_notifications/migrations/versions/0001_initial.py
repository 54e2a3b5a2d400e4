"""notifications, inbox

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Rollout: expand.
"""
import sqlalchemy as sa
from alembic import op
from microshop_chassis.migrations import create_inbox_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("user_id", sa.String(100), nullable=False),
        sa.Column("order_id", sa.String(100), nullable=True),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("type", "order_id", name="uq_notifications_type_order"),
    )
    op.create_index("ix_notifications_due", "notifications", ["status", "next_attempt_at"])
    op.create_index("ix_notifications_user", "notifications", ["user_id", "created_at"])
    create_inbox_table()


def downgrade() -> None:
    op.drop_table("inbox")
    op.drop_index("ix_notifications_user", "notifications")
    op.drop_index("ix_notifications_due", "notifications")
    op.drop_table("notifications")
