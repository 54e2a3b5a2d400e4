from microshop_chassis.migrations import run_alembic

from microshop_notifications.models import Base

run_alembic(Base.metadata)
