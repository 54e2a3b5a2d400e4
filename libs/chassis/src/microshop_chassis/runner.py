"""Run a service under uvicorn: the one entry point every ``python -m microshop_<service>`` uses,
so all processes start, log and stop the same way."""

from __future__ import annotations

import uvicorn

from .host import ServiceHost
from .logs import configure_logging


def serve(host: ServiceHost) -> None:
    settings = host.settings
    configure_logging(host.name, settings.log_level, settings.log_format)
    uvicorn.run(
        host.app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # configured above
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
    )
