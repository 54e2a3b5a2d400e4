from microshop_chassis.runner import serve

from .bootstrap import create_app
from .settings import NotificationsSettings

settings = NotificationsSettings()
serve(create_app(settings), settings)
