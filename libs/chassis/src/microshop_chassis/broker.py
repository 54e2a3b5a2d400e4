"""The connection to NATS JetStream, kept alive for the life of the service.

A service starts even when the broker is down (its readiness says so); the first connection is
retried in the background (a worker that finishes once connected), and nats-py reconnects by
itself after a broker restart.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import nats
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from .background import BackgroundWorker
from .events import DEAD_LETTER_PREFIX, DEAD_LETTER_STREAM, STREAM, SUBJECT_PREFIX

log = structlog.get_logger("microshop.broker")


class Broker:
    """``user``/``password`` (or credentials in the URL) are this service's broker user; only the
    URL without them is kept in ``url``, which logs and reports show."""

    def __init__(self, url: str, client_name: str, *, user: str = "", password: str = "") -> None:
        self._connect_url = url
        self.url = redacted_url(url)
        self.client_name = client_name
        self._credentials = {"user": user, "password": password} if user else {}
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.ready = asyncio.Event()
        self._connector = _Connector(self)

    def start(self) -> None:
        self._connector.start()

    async def _connect(self) -> None:
        nc = await nats.connect(
            self._connect_url,
            **self._credentials,
            name=self.client_name,
            connect_timeout=2,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        try:
            js = nc.jetstream(timeout=5)
            await ensure_stream(js)
        except BaseException:
            await _close_quietly(nc)
            raise
        self.nc, self.js = nc, js
        self.ready.set()
        log.info("broker_connected", url=self.url)

    async def wait_connected(self) -> JetStreamContext:
        await self.ready.wait()
        assert self.js is not None
        return self.js

    async def ping(self) -> None:
        if self.nc is None or not self.nc.is_connected:
            raise ConnectionError("not connected to NATS")
        await self.nc.flush(timeout=1)

    async def close(self) -> None:
        await self._connector.stop()
        if self.nc is not None and not self.nc.is_closed:
            try:
                # drain() can wait forever on a pull subscription's pending fetch (nats-py), and
                # shutdown must stay prompt: bound it, then close outright.
                await asyncio.wait_for(self.nc.drain(), 2.0)
            except Exception:  # timeout, or a broker outage: closing must not block shutdown
                await _close_quietly(self.nc)

    async def _on_error(self, exc: Exception) -> None:
        log.warning("broker_error", error=str(exc))

    async def _on_disconnected(self) -> None:
        log.warning("broker_disconnected")

    async def _on_reconnected(self) -> None:
        log.info("broker_reconnected")


def redacted_url(url: str) -> str:
    """``url`` without the user and password it may carry."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


class _Connector(BackgroundWorker):
    """Connects once, retrying with a capped backoff until the broker answers."""

    name = "broker-connect"
    failure_event = "broker_connect_failed"

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def round(self) -> bool:
        await self.broker._connect()
        self.finish()
        return False


async def _close_quietly(nc: Client) -> None:
    try:
        await nc.close()
    except Exception:  # the connection is gone already (broker down): nothing to flush
        pass


async def ensure_stream(js: JetStreamContext) -> None:
    """Create the event and dead-letter streams if missing. Every process does this; first wins."""
    # Nats-Msg-Id dedupe window: a relay re-publishing after a crash within it is dropped by the
    # server; consumers' inboxes cover anything older.
    await _ensure(js, StreamConfig(
        name=STREAM, subjects=[f"{SUBJECT_PREFIX}.>"], storage=StorageType.FILE, duplicate_window=600
    ))
    # Events a consumer gave up on, kept for a human to inspect and replay.
    await _ensure(js, StreamConfig(
        name=DEAD_LETTER_STREAM, subjects=[f"{DEAD_LETTER_PREFIX}.>"], storage=StorageType.FILE
    ))


async def _ensure(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
        except Exception:  # another process created it between our two calls
            await js.stream_info(config.name)
