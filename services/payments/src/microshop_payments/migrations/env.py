from microshop_chassis.migrations import run_alembic

from microshop_payments.models import Base

run_alembic(Base.metadata)
