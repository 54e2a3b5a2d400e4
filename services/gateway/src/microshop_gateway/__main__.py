from microshop_chassis.runner import serve

from .bootstrap import create_app
from .settings import GatewaySettings

settings = GatewaySettings()
serve(create_app(settings), settings)
