from microshop_chassis.runner import serve

from .compose import build, workers

serve(build(), workers=workers())
