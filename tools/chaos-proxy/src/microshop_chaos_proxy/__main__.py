"""``python -m microshop_chaos_proxy``: host several named fault-injection proxies and their admin API.

One process serves every proxy of a chaos run; it runs until SIGTERM or SIGINT, then closes its
listeners and connections and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from aiohttp import web

from .admin import create_app
from .events import EventLog
from .proxy import Proxy, ProxyRegistry, make_rng


@dataclass(frozen=True)
class ProxySpec:
    name: str
    listen_port: int
    upstream_host: str
    upstream_port: int


@dataclass
class Config:
    host: str = "127.0.0.1"
    admin_port: int = 8474
    proxies: list[ProxySpec] = field(default_factory=list)
    seed: int | None = None
    log_file: str | None = None


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range: {port}")
    return port


def parse_proxy_spec(text: str) -> ProxySpec:
    """``NAME=LISTEN_PORT:UPSTREAM_HOST:UPSTREAM_PORT`` (an IPv6 upstream host goes in brackets)."""
    try:
        name, rest = text.split("=", 1)
        listen, upstream = rest.split(":", 1)
        host, port = upstream.rsplit(":", 1)
        spec = ProxySpec(name.strip(), _port(listen), host.strip("[]"), _port(port))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected NAME=LISTEN_PORT:UPSTREAM_HOST:UPSTREAM_PORT, got {text!r}"
        ) from None
    if not spec.name or "/" in spec.name or not spec.upstream_host:
        raise argparse.ArgumentTypeError(f"invalid proxy spec {text!r}")
    return spec


def parse_args(argv: Sequence[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="microshop_chaos_proxy", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address every proxy and the admin API listen on")
    p.add_argument("--admin-port", type=int, default=8474, help="admin HTTP API port (0: any free port)")
    p.add_argument(
        "--proxy",
        dest="proxies",
        action="append",
        type=parse_proxy_spec,
        default=[],
        metavar="NAME=LISTEN_PORT:UPSTREAM_HOST:UPSTREAM_PORT",
        help="a proxy to host (repeatable); LISTEN_PORT 0 picks a free port",
    )
    p.add_argument("--seed", type=int, default=None, help="seed for jitter and probabilistic toxics")
    p.add_argument("--log-file", default=None, help="also append the JSON event lines to this file")
    a = p.parse_args(argv)
    names = [s.name for s in a.proxies]
    if len(set(names)) != len(names):
        p.error("proxy names must be unique")
    ports = [s.listen_port for s in a.proxies if s.listen_port]
    if len(set(ports)) != len(ports) or a.admin_port in ports:
        p.error("listen ports must be distinct")
    return Config(host=a.host, admin_port=a.admin_port, proxies=a.proxies, seed=a.seed, log_file=a.log_file)


async def serve(config: Config, events: EventLog) -> None:
    registry = ProxyRegistry(events)
    for spec in config.proxies:
        registry.add(
            Proxy(
                spec.name,
                config.host,
                spec.listen_port,
                spec.upstream_host,
                spec.upstream_port,
                rng=make_rng(config.seed, spec.name),
                events=events,
            )
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    runner = web.AppRunner(create_app(registry), access_log=None)
    await runner.setup()
    try:
        await registry.start()
        site = web.TCPSite(runner, config.host, config.admin_port)
        await site.start()
        host, port = runner.addresses[0][:2]
        events.emit(None, "admin_listening", url=f"http://{host}:{port}", seed=config.seed)
        await stop.wait()
        events.emit(None, "stopping")
    finally:
        await registry.close()
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_args(argv)
    streams: list[TextIO] = [sys.stdout]
    log_file = open(config.log_file, "a", encoding="utf-8") if config.log_file else None  # noqa: SIM115
    if log_file is not None:
        streams.append(log_file)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(config, EventLog(streams)))
    except OSError as exc:  # typically a port already in use
        sys.exit(f"microshop-chaos-proxy: {exc}")
    finally:
        if log_file is not None:
            log_file.close()


if __name__ == "__main__":
    main()
