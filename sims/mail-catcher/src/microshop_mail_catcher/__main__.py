"""Command line: ``python -m microshop_mail_catcher [--host H] [--smtp-port P] ...``."""

import argparse
import asyncio
import logging
import os
import signal
import sys

import uvloop

from microshop_mail_catcher.app import start

_ENV = "MICROSHOP_MAIL_CATCHER_"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="microshop_mail_catcher",
        description="Catch every e-mail sent over SMTP and show it over HTTP.",
        epilog=f"Each option defaults to the environment variable {_ENV}<OPTION>.",
    )
    parser.add_argument("--host", default=env.get(f"{_ENV}HOST", "127.0.0.1"))
    parser.add_argument("--smtp-port", type=int, default=int(env.get(f"{_ENV}SMTP_PORT", "1025")))
    parser.add_argument("--http-port", type=int, default=int(env.get(f"{_ENV}HTTP_PORT", "8025")))
    parser.add_argument(
        "--db",
        default=env.get(f"{_ENV}DB") or None,
        help="SQLite file that keeps mail across restarts (default: in memory)",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    running = await start(args.host, args.smtp_port, args.http_port, args.db)
    logging.getLogger("microshop.mail_catcher").info(
        "mail-catcher ready smtp=%s:%d http=%s db=%s",
        args.host,
        running.smtp_port,
        running.http_url,
        args.db or ":memory:",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await running.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # aiosmtpd logs every SMTP command; one line per message is ours to write.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    # uvloop, as the services' servers: 1.25 -> 1.07 CPU-ms per checkout (docs/performance.md).
    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
