"""products.received_units and products.sold_units: running totals behind on_hand

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

on_hand == received_units - sold_units from here on (CHECK ck_products_conservation).
Existing rows are backfilled: sold_units = units of their COMMITTED reservations (RESTOCKED ones
came back on hand, so they count neither way); received_units = on_hand + sold_units.

Rollout: contract (on_hand written alone, as the version before does: ck_products_conservation refuses it).
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BACKFILL_SOLD = """
UPDATE products SET sold_units = COALESCE((
    SELECT SUM(reservation_lines.quantity)
    FROM reservation_lines JOIN reservations ON reservations.order_id = reservation_lines.order_id
    WHERE reservations.status = 'COMMITTED' AND reservation_lines.sku = products.sku
), 0)
"""
BACKFILL_RECEIVED = "UPDATE products SET received_units = on_hand + sold_units"


def upgrade() -> None:
    # batch_alter_table: plain ALTER TABLE on PostgreSQL; on SQLite the second block recreates the
    # table (SQLite cannot add a CHECK constraint to an existing table), keeping its other constraints.
    with op.batch_alter_table("products") as batch:
        batch.add_column(sa.Column("received_units", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("sold_units", sa.Integer, nullable=False, server_default="0"))
    op.execute(BACKFILL_SOLD)
    op.execute(BACKFILL_RECEIVED)
    with op.batch_alter_table("products") as batch:
        batch.create_check_constraint("ck_products_sold", "sold_units >= 0")
        batch.create_check_constraint("ck_products_conservation", "on_hand = received_units - sold_units")


def downgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.drop_constraint("ck_products_conservation", type_="check")
        batch.drop_constraint("ck_products_sold", type_="check")
        batch.drop_column("sold_units")
        batch.drop_column("received_units")
