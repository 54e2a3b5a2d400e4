"""``python -m microshop_card_processor``: run the simulator.

Every option can also come from the environment (``MICROSHOP_CARD_PROCESSOR_<OPTION>``); a command
line flag wins over the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from .app import Config, create_app

ENV_PREFIX = "MICROSHOP_CARD_PROCESSOR_"


def _env(name: str, default: Any) -> Any:
    # argparse runs ``type`` over string defaults too, so env values are parsed and checked like flags.
    return os.environ.get(ENV_PREFIX + name, default)


def _bounded(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low:g}..{high:g}")
        return value

    return parse


def parse_args(argv: Sequence[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="microshop_card_processor", description=__doc__.splitlines()[0])
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=_env("PORT", 8090))
    p.add_argument("--db", default=_env("DB", ":memory:"), help="SQLite file (default: in-memory)")
    p.add_argument("--latency-ms", type=_bounded(0, 600_000), default=_env("LATENCY_MS", 0.0))
    p.add_argument("--jitter-ms", type=_bounded(0, 600_000), default=_env("JITTER_MS", 0.0))
    p.add_argument("--failure-rate", type=_bounded(0, 1), default=_env("FAILURE_RATE", 0.0))
    p.add_argument("--seed", type=int, default=_env("SEED", None), help="seed for jitter and failures")
    a = p.parse_args(argv)
    return Config(
        host=a.host,
        port=a.port,
        db=a.db,
        latency_ms=a.latency_ms,
        jitter_ms=a.jitter_ms,
        failure_rate=a.failure_rate,
        seed=a.seed,
    )


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    log = logging.getLogger("microshop_card_processor")
    log.info("card-processor listening on http://%s:%s %s", config.host, config.port, config)
    # access_log=None: our middleware writes the one line per request (without query strings).
    web.run_app(create_app(config), host=config.host, port=config.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
