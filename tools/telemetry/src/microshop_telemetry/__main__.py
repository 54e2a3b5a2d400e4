"""``python -m microshop_telemetry --host H --port P --db PATH``: receive OTLP/HTTP traces and keep them.

Serves until SIGTERM or SIGINT, then finishes the requests in flight, closes the store and exits 0.
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Sequence

import uvicorn
from microshop_chassis.logs import configure_logging
from microshop_chassis.runner import server_config, tune_garbage_collection

from .app import ReceiverConfig, create_app

# Exporters put no large headers on a request; the bound is the services' own.
MAX_HEADER_BYTES = 16 * 1024


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, ReceiverConfig]:
    parser = argparse.ArgumentParser(prog="microshop_telemetry", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318, help="4318 is OTLP/HTTP's registered port")
    parser.add_argument("--db", required=True, help="the SQLite file spans are kept in (created 0600)")
    parser.add_argument("--retention-seconds", type=float, default=3600.0, help="drop spans older than this")
    parser.add_argument("--max-spans", type=int, default=500_000, help="then drop the oldest beyond this many")
    parser.add_argument("--logs-dir", help="the components' JSON log files: the console shows a trace's lines")
    parser.add_argument("--control-socket", help="the supervisor's control socket: the console's chaos page")
    parser.add_argument("--scrape-targets", help="a Prometheus file_sd JSON file: scrape each target's /metrics")
    parser.add_argument("--scrape-interval", type=float, default=5.0, help="seconds between scrapes")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.retention_seconds <= 0 or args.max_spans <= 0:
        parser.error("--retention-seconds and --max-spans must be positive")
    if args.scrape_interval <= 0:
        parser.error("--scrape-interval must be positive")
    config = ReceiverConfig(db_path=args.db, retention_seconds=args.retention_seconds, max_spans=args.max_spans,
                            logs_dir=args.logs_dir, control_socket=args.control_socket,
                            scrape_targets=args.scrape_targets, scrape_interval_seconds=args.scrape_interval)
    return args, config


def main(argv: Sequence[str] | None = None) -> None:
    args, config = parse_args(argv)
    configure_logging("telemetry", args.log_level)
    # uvicorn, once stopped, raises the signal it stopped for again under the handler it found:
    # a no-op one lets a clean stop exit 0 rather than "killed by SIGTERM".
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda _signal, _frame: None)
    server = uvicorn.Server(server_config(create_app(config), host=args.host, port=args.port,
                                          max_header_bytes=MAX_HEADER_BYTES))
    tune_garbage_collection()  # it receives every span of every service: as busy as any of them
    server.run()


if __name__ == "__main__":
    main()
