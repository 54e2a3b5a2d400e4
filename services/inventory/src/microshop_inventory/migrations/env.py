from microshop_chassis.migrations import run_alembic

from microshop_inventory.models import Base

run_alembic(Base.metadata)
