from microshop_chassis.runner import serve

from .bootstrap import create_app
from .settings import OrdersSettings

settings = OrdersSettings()
serve(create_app(settings), settings)
