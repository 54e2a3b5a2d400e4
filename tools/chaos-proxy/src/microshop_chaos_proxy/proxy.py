"""One named TCP proxy: its listener, the connections through it, and the toxics applied to them.

Built on asyncio protocols rather than streams: a chunk goes from ``buffer_updated`` straight to the
other transport's ``write``, with no task switch per chunk. That matters because during a chaos run this
process carries all of microshop's service-to-service traffic on a 2-core machine. Faults that delay
data (latency, bandwidth) compute a release time per chunk and schedule the write on the event loop
instead of sleeping in a read loop, so delays never accumulate across chunks and order is kept.

Toxics are read from the proxy on every chunk, so adding or removing one affects open connections too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from .events import EventLog
from .toxics import Bandwidth, Error, Latency, RequestToxic, ResetPeer, Timeout, Toxic

CHUNK_SIZE = 64 * 1024
# Delayed (latency/bandwidth) bytes held per connection before we stop reading from upstream.
DELAYED_HIGH_WATER = 1024 * 1024
DELAYED_LOW_WATER = 256 * 1024
UPSTREAM_CONNECT_TIMEOUT = 10.0
_LINGER_ZERO = struct.pack("ii", 1, 0)


class ToxicExists(KeyError):
    """A toxic with that name is already on the proxy (409)."""


class ToxicNotFound(KeyError):
    """No toxic with that name on the proxy (404)."""


def _set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def reset_transport(transport: asyncio.BaseTransport | None) -> None:
    """Close with RST instead of FIN (SO_LINGER 0): the peer sees 'connection reset', not a clean end."""
    if transport is None or transport.is_closing():
        if transport is not None:
            transport.abort()
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()


@dataclass
class ProxyStats:
    connections_total: int = 0
    connections_active: int = 0
    requests_failed_by_toxics: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class ScheduledWriter:
    """Delivers upstream->client chunks at release times, in order; writes at once when nothing is shaped.

    Release time of a chunk = max(arrival + latency, previous release) (+ transmission time under a
    bandwidth limit). One loop timer per connection at most, for the head of the queue.
    """

    __slots__ = ("_conn", "_loop", "_pending", "_timer", "last_release", "pending_bytes")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._loop = conn.loop
        self._pending: deque[tuple[float, bytes | None]] = deque()  # None marks EOF
        self._timer: asyncio.TimerHandle | None = None
        self.last_release = 0.0
        self.pending_bytes = 0

    def send(self, data: bytes) -> None:
        proxy = self._conn.proxy
        if not self._pending and not proxy.shapes_downstream:
            self._conn.client.write(data)  # the pass-through fast path
            return
        rng = proxy.rng
        delay = sum(t.delay_seconds(rng) for t in proxy.latency_toxics)
        release = max(self._loop.time() + delay, self.last_release)
        rate = proxy.bandwidth_bytes_per_second
        if rate is None:
            self._enqueue(release, data)
        else:
            # Slices of ~50 ms each, so a slow link trickles instead of delivering 64 KiB bursts.
            step = max(1, int(rate * 0.05))
            for start in range(0, len(data), step):
                piece = data[start : start + step]
                release += len(piece) / rate
                self._enqueue(release, piece)
        self.last_release = release

    def send_eof(self) -> None:
        if self._pending:
            self._enqueue(self.last_release, None)
        else:
            self._conn.deliver_eof_to_client()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
        self.pending_bytes = 0

    def _enqueue(self, release: float, data: bytes | None) -> None:
        self._pending.append((release, data))
        if data is not None:
            self.pending_bytes += len(data)
            if self.pending_bytes > DELAYED_HIGH_WATER:
                self._conn.set_downstream_backlogged(True)
        if self._timer is None:
            self._timer = self._loop.call_at(self._pending[0][0], self._flush)

    def _flush(self) -> None:
        self._timer = None
        conn = self._conn
        now = self._loop.time()
        while self._pending and self._pending[0][0] <= now and not conn.closed:
            _, data = self._pending.popleft()
            if data is None:
                conn.deliver_eof_to_client()
            else:
                self.pending_bytes -= len(data)
                conn.client.write(data)
        if conn.closed:
            return
        if self.pending_bytes < DELAYED_LOW_WATER:
            conn.set_downstream_backlogged(False)
        if self._pending:
            self._timer = self._loop.call_at(self._pending[0][0], self._flush)


class _ClientSide(asyncio.BufferedProtocol):
    """The accepted socket: reads what the caller sends."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.conn: Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.conn = self.proxy._accept(transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.proxy._read_view

    def buffer_updated(self, nbytes: int) -> None:
        self.conn.on_client_data(self.proxy._read_view[:nbytes].tobytes())

    def eof_received(self) -> bool:
        self.conn.on_client_eof()
        return True  # keep our write side open: half-close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.conn.on_transport_lost(exc)

    def pause_writing(self) -> None:
        self.conn.set_client_write_blocked(True)

    def resume_writing(self) -> None:
        self.conn.set_client_write_blocked(False)


class _UpstreamSide(asyncio.BufferedProtocol):
    """The socket to the real service: reads its responses."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        _set_nodelay(transport)
        self.conn.upstream = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.conn.proxy._read_view

    def buffer_updated(self, nbytes: int) -> None:
        self.conn.on_upstream_data(self.conn.proxy._read_view[:nbytes].tobytes())

    def eof_received(self) -> bool:
        self.conn.on_upstream_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.on_transport_lost(exc)

    def pause_writing(self) -> None:
        if not self.conn.closed:
            self.conn.client.pause_reading()

    def resume_writing(self) -> None:
        if not self.conn.closed:
            self.conn.client.resume_reading()


class Connection:
    """One client connection and its upstream twin, with the per-connection state toxics need.

    ``at_request_start`` is how the HTTP-aware toxics (error, reset_peer) find request boundaries
    without parsing HTTP: it is true when the connection opens and becomes true again as soon as
    upstream sends anything after the client last sent; the next client bytes are a new request.
    """

    def __init__(self, proxy: Proxy, client: asyncio.Transport) -> None:
        self.proxy = proxy
        self.loop = proxy.loop
        self.client = client
        self.upstream: asyncio.Transport | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.downstream = ScheduledWriter(self)
        self.closed = False
        self.at_request_start = True
        self.reset_on_response = False
        self.blackholed = False
        self.eof_sent_upstream = False
        self.eof_sent_to_client = False
        self._client_write_blocked = False
        self._downstream_backlogged = False

    async def connect_upstream(self) -> None:
        proxy = self.proxy
        try:
            async with asyncio.timeout(UPSTREAM_CONNECT_TIMEOUT):
                await self.loop.create_connection(lambda: _UpstreamSide(self), proxy.upstream_host, proxy.upstream_port)
        except (OSError, TimeoutError):
            self.close(reset=True)  # the caller learns at once that nobody is there
            return
        if self.closed:
            self.upstream.close()
        else:
            self.client.resume_reading()

    # -- client -> upstream ----------------------------------------------------------------------

    def on_client_data(self, data: bytes) -> None:
        if self.closed:
            return
        proxy = self.proxy
        if proxy.blackhole:
            self.blackholed = True
            return
        if self.at_request_start:
            self.at_request_start = False
            toxic = proxy.draw_request_fault() if proxy.request_toxics else None
            if toxic is not None:
                proxy.stats.requests_failed_by_toxics += 1
                if isinstance(toxic, Error):
                    self.client.write(toxic.response())
                    self.close()
                    return
                if not toxic.after_request:
                    self.close(reset=True)
                    return
                self.reset_on_response = True
        proxy.stats.bytes_up += len(data)
        self.upstream.write(data)

    def on_client_eof(self) -> None:
        if self.closed:
            return
        if self.proxy.blackhole or self.blackholed:
            self.close()  # the caller gave up on a blackholed connection: nothing left to keep open
            return
        self.upstream.write_eof()
        self.eof_sent_upstream = True
        self._close_if_both_ended()

    # -- upstream -> client ----------------------------------------------------------------------

    def on_upstream_data(self, data: bytes) -> None:
        if self.closed:
            return
        proxy = self.proxy
        if proxy.blackhole:
            self.blackholed = True
            return
        if self.reset_on_response:
            self.close(reset=True)  # upstream did the work; the caller never hears about it
            return
        self.at_request_start = True
        proxy.stats.bytes_down += len(data)
        self.downstream.send(data)

    def on_upstream_eof(self) -> None:
        if self.closed:
            return
        if self.proxy.blackhole or self.blackholed:
            self.blackholed = True  # swallow it: the caller must not learn anything
            return
        self.downstream.send_eof()

    def deliver_eof_to_client(self) -> None:
        if self.client.can_write_eof():
            self.client.write_eof()
        self.eof_sent_to_client = True
        self._close_if_both_ended()

    # -- flow control ----------------------------------------------------------------------------

    def set_client_write_blocked(self, blocked: bool) -> None:
        self._client_write_blocked = blocked
        self._sync_upstream_reading()

    def set_downstream_backlogged(self, backlogged: bool) -> None:
        if backlogged != self._downstream_backlogged:
            self._downstream_backlogged = backlogged
            self._sync_upstream_reading()

    def _sync_upstream_reading(self) -> None:
        if self.closed or self.upstream is None:
            return
        if self._client_write_blocked or self._downstream_backlogged:
            self.upstream.pause_reading()
        else:
            self.upstream.resume_reading()

    # -- ending ----------------------------------------------------------------------------------

    def on_transport_lost(self, exc: Exception | None) -> None:
        # A peer reset (exc set) is passed on as a reset; otherwise a plain close.
        self.close(reset=exc is not None)

    def _close_if_both_ended(self) -> None:
        if self.eof_sent_upstream and self.eof_sent_to_client:
            self.close()

    def close(self, *, reset: bool = False) -> None:
        """Close both sides once (FIN after buffered data, or RST when ``reset``); idempotent."""
        if self.closed:
            return
        self.closed = True
        self.downstream.cancel()
        task = self.connect_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        if reset:
            reset_transport(self.client)
            if self.upstream is not None:
                self.upstream.abort()
        else:
            self.client.close()
            if self.upstream is not None:
                self.upstream.close()
        self.proxy._forget(self)


class Proxy:
    """A named listener forwarding to one upstream, with its toxics, stats and enabled switch."""

    def __init__(
        self,
        name: str,
        listen_host: str,
        listen_port: int,
        upstream_host: str,
        upstream_port: int,
        *,
        rng: random.Random | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.name = name
        self.listen_host = listen_host
        self.listen_port = listen_port  # replaced by the real port once listening (so port 0 works)
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.rng = rng or random.Random()
        self.events = events or EventLog()
        self.toxics: dict[str, Toxic] = {}
        self.stats = ProxyStats()
        self.enabled = False
        self._server: asyncio.Server | None = None
        self._connections: set[Connection] = set()
        # One read buffer per proxy: each chunk is copied out before the loop runs anything else.
        self._read_view = memoryview(bytearray(CHUNK_SIZE))
        self.loop: asyncio.AbstractEventLoop | None = None
        self._refresh_toxics()

    # -- toxics ----------------------------------------------------------------------------------

    def _refresh_toxics(self) -> None:
        """Precompute what the per-chunk path asks, so it never walks the toxic list."""
        toxics = list(self.toxics.values())
        self.latency_toxics = [t for t in toxics if isinstance(t, Latency)]
        rates = [t.bytes_per_second for t in toxics if isinstance(t, Bandwidth)]
        self.bandwidth_bytes_per_second: float | None = min(rates) if rates else None
        self.shapes_downstream = bool(self.latency_toxics) or self.bandwidth_bytes_per_second is not None
        self.request_toxics: list[RequestToxic] = [t for t in toxics if isinstance(t, Error | ResetPeer)]
        was_blackhole = getattr(self, "blackhole", False)
        self.blackhole = any(isinstance(t, Timeout) for t in toxics)
        if was_blackhole and not self.blackhole:
            # Data was thrown away on these: the byte streams are broken, so end them.
            for conn in [c for c in self._connections if c.blackholed]:
                conn.close()

    def draw_request_fault(self) -> RequestToxic | None:
        """The toxic that breaks this new request, if any: one draw per request toxic, in insertion order."""
        for toxic in self.request_toxics:
            if self.rng.random() < toxic.rate:
                return toxic
        return None

    def add_toxic(self, toxic: Toxic) -> None:
        if toxic.name in self.toxics:
            raise ToxicExists(toxic.name)
        self.toxics[toxic.name] = toxic
        self._refresh_toxics()
        self.events.emit(self.name, "toxic_added", toxic=toxic.to_json())

    def remove_toxic(self, name: str) -> Toxic:
        toxic = self.toxics.pop(name, None)
        if toxic is None:
            raise ToxicNotFound(name)
        self._refresh_toxics()
        self.events.emit(self.name, "toxic_removed", toxic=toxic.to_json())
        return toxic

    # -- listener --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (without logging a change: the caller announces startup)."""
        self.loop = asyncio.get_running_loop()
        await self._listen()
        self.enabled = True

    async def _listen(self) -> None:
        self._server = await self.loop.create_server(
            lambda: _ClientSide(self), self.listen_host, self.listen_port, reuse_address=True
        )
        self.listen_port = self._server.sockets[0].getsockname()[1]

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()  # closes the listening socket now: new connects are refused
            self._server = None

    async def set_enabled(self, enabled: bool) -> bool:
        """Enable (listen again on the same port) or disable (refuse and reset everything). True if changed."""
        if enabled == self.enabled:
            return False
        if enabled:
            await self._listen()
            self.enabled = True
            self.events.emit(self.name, "enabled", listen=self.listen)
        else:
            self.enabled = False
            self._stop_listening()
            reset = len(self._connections)
            for conn in list(self._connections):
                conn.close(reset=True)
            self.events.emit(self.name, "disabled", connections_reset=reset)
        return True

    async def reset(self) -> None:
        """Back to a clean pass-through: enabled, no toxics."""
        removed = [t.to_json() for t in self.toxics.values()]
        was_enabled = self.enabled
        self.toxics.clear()
        self._refresh_toxics()
        if not self.enabled:
            await self._listen()
            self.enabled = True
        self.events.emit(self.name, "reset", toxics_removed=removed, re_enabled=not was_enabled)

    async def close(self) -> None:
        """Shutdown: stop listening and close every connection."""
        self._stop_listening()
        self.enabled = False
        for conn in list(self._connections):
            conn.close()

    def _accept(self, client: asyncio.Transport) -> Connection:
        _set_nodelay(client)
        client.pause_reading()  # until upstream is connected
        conn = Connection(self, client)
        self._connections.add(conn)
        self.stats.connections_total += 1
        self.stats.connections_active += 1
        conn.connect_task = self.loop.create_task(conn.connect_upstream())
        return conn

    def _forget(self, conn: Connection) -> None:
        if conn in self._connections:
            self._connections.remove(conn)
            self.stats.connections_active -= 1

    # -- views -----------------------------------------------------------------------------------

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"

    @property
    def upstream(self) -> str:
        return f"{self.upstream_host}:{self.upstream_port}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self.toxics.values()],
            "stats": asdict(self.stats),
        }


def make_rng(seed: int | None, proxy_name: str) -> random.Random:
    """A generator per proxy, derived from the run's seed: one proxy's traffic never shifts another's draws."""
    return random.Random(f"{seed}:{proxy_name}") if seed is not None else random.Random()


class ProxyRegistry:
    """All proxies of this process, by name (what the admin API manages)."""

    def __init__(self, events: EventLog | None = None) -> None:
        self.events = events or EventLog()
        self.proxies: dict[str, Proxy] = {}

    def add(self, proxy: Proxy) -> Proxy:
        if proxy.name in self.proxies:
            raise ValueError(f"duplicate proxy name {proxy.name!r}")
        self.proxies[proxy.name] = proxy
        return proxy

    async def start(self) -> None:
        for proxy in self.proxies.values():
            await proxy.start()
            self.events.emit(proxy.name, "listening", listen=proxy.listen, upstream=proxy.upstream)

    async def reset(self) -> None:
        for proxy in self.proxies.values():
            await proxy.reset()

    async def close(self) -> None:
        for proxy in self.proxies.values():
            await proxy.close()
