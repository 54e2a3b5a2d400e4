from microshop_chassis.runner import serve

from .bootstrap import build

serve(build())
