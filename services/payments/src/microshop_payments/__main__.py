from microshop_chassis.runner import serve

from .bootstrap import create_app
from .settings import PaymentsSettings

settings = PaymentsSettings()
serve(create_app(settings), settings)
