from microshop_chassis.runner import serve

from .bootstrap import create_app
from .settings import InventorySettings

settings = InventorySettings()
serve(create_app(settings), settings)
