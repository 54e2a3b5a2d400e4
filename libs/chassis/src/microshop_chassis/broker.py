"""The connection to NATS JetStream, kept alive for the life of the service.

A service starts even when the broker is down (its readiness says so); the first connection is
retried in the background (a worker that finishes once connected), and nats-py reconnects by
itself after a broker restart. The URL may name several servers, comma-separated (the nodes of a
cluster): nats-py connects to one and fails over to the others.
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
    URL without them is kept in ``url``, which logs and reports show. ``stream_replicas``: how
    many copies of the streams a cluster keeps (3 with ``microshop up --nats-cluster``).
    ``streams=False``: a connection for plain NATS only (a service with no events, whose
    directory of replicas still needs the broker), which leaves the streams alone."""

    def __init__(self, url: str, client_name: str, *, user: str = "", password: str = "",
                 stream_replicas: int = 1, streams: bool = True) -> None:
        self._servers = server_urls(url)
        self.url = ",".join(redacted_url(server) for server in self._servers)
        self.client_name = client_name
        self.stream_replicas = stream_replicas
        self.streams = streams
        self._credentials = {"user": user, "password": password} if user else {}
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.ready = asyncio.Event()
        self._connector = _Connector(self)

    def start(self) -> None:
        self._connector.start()

    async def _connect(self) -> None:
        nc = await nats.connect(
            self._servers,
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
            if self.streams:
                await ensure_stream(js, replicas=self.stream_replicas)
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


def server_urls(url: str) -> list[str]:
    """``nats://a:4222,nats://b:4223`` -> one URL per server."""
    servers = [server.strip() for server in url.split(",") if server.strip()]
    if not servers:
        raise ValueError("no NATS server URL given")
    return servers


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


async def ensure_stream(js: JetStreamContext, *, replicas: int = 1, update: bool = False) -> None:
    """Create the event and dead-letter streams if missing, with ``replicas`` copies each. Every
    process does this; first wins.

    A stream that exists with another number of replicas (made by a process configured for one
    node, say) is changed only with ``update`` (the launcher does it as the operator, before any
    service starts; a service's user may not update streams): otherwise the mismatch is logged."""
    # Nats-Msg-Id dedupe window: a relay re-publishing after a crash within it is dropped by the
    # server; consumers' inboxes cover anything older.
    await _ensure(js, StreamConfig(
        name=STREAM, subjects=[f"{SUBJECT_PREFIX}.>"], storage=StorageType.FILE, duplicate_window=600,
        num_replicas=replicas,
    ), update=update)
    # Events a consumer gave up on, kept for a human to inspect and replay.
    await _ensure(js, StreamConfig(
        name=DEAD_LETTER_STREAM, subjects=[f"{DEAD_LETTER_PREFIX}.>"], storage=StorageType.FILE,
        num_replicas=replicas,
    ), update=update)


async def _ensure(js: JetStreamContext, config: StreamConfig, *, update: bool) -> None:
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
        except Exception:  # another process created it between our two calls
            info = await js.stream_info(config.name)
        else:
            return
    existing = info.config.num_replicas or 1
    if existing == config.num_replicas:
        return
    if not update:
        log.error("stream_replicas_mismatch", stream=config.name, replicas=existing, wanted=config.num_replicas,
                  remedy="microshop up --nats-cluster updates it as the operator (or: nats stream edit "
                         f"{config.name} --replicas {config.num_replicas})")
        return
    info.config.num_replicas = config.num_replicas
    await js.update_stream(info.config)
    log.info("stream_replicas_changed", stream=config.name, replicas=existing, now=config.num_replicas)


async def prepare_streams(url: str, *, replicas: int, timeout: float) -> None:
    """As the operator (credentials in ``url``): ensure the streams with ``replicas`` copies,
    changing an existing stream's replicas, retrying until ``timeout`` seconds passed. A cluster
    that just started answers only once its nodes elected a metadata leader: short requests,
    retried, get there sooner than one long one (a request before the election goes unanswered)."""
    deadline = asyncio.get_running_loop().time() + timeout
    nc = await nats.connect(server_urls(url), connect_timeout=2, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        js = nc.jetstream(timeout=1)
        while True:
            try:
                await ensure_stream(js, replicas=replicas, update=True)
                return
            except Exception as exc:  # no quorum yet (timeouts, 503s), or a node still starting
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"the streams were not ready within {timeout:g} s: {exc!r}") from exc
                await asyncio.sleep(0.1)
    finally:
        await _close_quietly(nc)
