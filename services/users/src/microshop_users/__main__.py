from microshop_chassis.runner import serve

from .bootstrap import create_app
from .settings import UsersSettings

settings = UsersSettings()
serve(create_app(settings), settings)
