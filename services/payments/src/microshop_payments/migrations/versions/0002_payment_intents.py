"""payment intents: the idempotency key on the payment (PENDING and VOIDED need no schema change)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Rollout: expand.
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows keep their values; their key stays NULL (they are final, no call is repeated).
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("idempotency_key")
