from microshop_chassis.runner import serve

from .bootstrap import create_app
from .settings import ReportsSettings

settings = ReportsSettings()
serve(create_app(settings), settings)
