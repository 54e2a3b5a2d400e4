"""signing keys leave the database: private keys are files only users' account can read

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

The keys that were here are dropped, not exported: tokens they signed stop verifying (users log in
again; services fetch a new service token on the 401), which is what a key that every replica,
backup and SQL client could read deserves. The new key is created in the keys directory at start.

Rollout: contract (signing_keys: the keys are files from this release on; the version before still reads it).
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("signing_keys")


def downgrade() -> None:
    # The table comes back empty: the keys stay in their files.
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("private_pem", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
