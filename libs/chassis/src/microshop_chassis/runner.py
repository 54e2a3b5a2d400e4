"""Run a service under uvicorn: the one entry point every ``python -m microshop_<service>`` uses,
so all processes start, log and stop the same way.

The HTTP protocol is uvicorn's httptools one with two changes at the connection level, where no
ASGI middleware can act:

- the request head is bounded. llhttp (under httptools) sets no limit of its own on header size,
  and httptools accumulates a header in memory until it is complete: an 8 MB header would be held
  (and forwarded by the gateway) before the app saw it. A head still incomplete past
  ``max_header_bytes`` plus room for the request line gets 431 and the connection is closed.
- uvicorn's own answer to bytes that are not HTTP (a text/plain 400) is problem+json like the rest.

A graceful stop (SIGTERM or SIGINT) is a drain, so it never fails a request already accepted:

1. ``/ready`` answers 503 at once (``ServiceHost.begin_drain``): a balancer or a caller's
   discovery stops choosing this process; consumers stop fetching.
2. The listener closes: new connections are refused (a client then tries another replica).
3. Requests in flight finish and are answered with ``Connection: close``. An idle keep-alive
   connection stays open meanwhile, and a request that arrives on it is served the same way
   (uvicorn alone closes idle connections at once, and a request already on its way to one gets a
   reset). Once no request is in flight, the idle connections are closed.
4. The host stops its parts in reverse order, each finishing what it holds (host.py).
5. The process exits 0. All within ``drain_seconds`` (``MICROSHOP_DRAIN_SECONDS``); a request
   still running then is cancelled (logged as an error: it failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .errors import HEADERS_TOO_LARGE, MALFORMED_REQUEST, PROBLEM_JSON, Problem
from .host import ServiceHost
from .host_group import HostGroup
from .logs import configure_logging

log = structlog.get_logger("microshop.http")

# Room for the request line (method, target, version) on top of the headers: URLs here are short.
REQUEST_LINE_ALLOWANCE = 8 * 1024
# The parts of uvicorn's HttpToolsProtocol (checked against 0.54) the subclass relies on.
_PROTOCOL_HOOKS = ("connection_made", "data_received", "send_400_response", "on_message_begin", "on_headers_complete",
                   "on_response_complete", "shutdown")
# How often the drain looks whether the requests in flight have finished.
_DRAIN_POLL_SECONDS = 0.05
# CPython's collector runs a young collection every 700 net allocations of container objects. A
# request allocates hundreds (a span dozens more, alive until its batch is exported), so a busy
# service collected hundreds of times a second and promoted request garbage into older generations
# whose full collections took 100-145 ms. Nearly everything here is freed by reference counting;
# the collector is only for cycles, so it can run far less often (docs/performance.md, "Garbage
# collection": 5-7 ms of collection per checkout before, under 0.4 ms after).
GC_THRESHOLDS = (20_000, 20, 10)


def serve(host: ServiceHost | HostGroup, *, workers: int = 1) -> None:
    """Serve ``host`` until SIGTERM or SIGINT, then drain. ``workers`` > 1: that many processes,
    forked once the app is built, accept on the one port (as a monolith is deployed)."""
    settings = host.settings
    configure_logging(host.name, settings.log_level, settings.log_format)
    config = server_config(host.app, host=settings.host, port=settings.port,
                           max_header_bytes=settings.max_header_bytes)
    # Once stopped, uvicorn restores the handler it found and raises the signal it stopped for
    # again, which would end a process that drained cleanly with "killed by SIGTERM": the handler
    # it finds takes that second delivery as done.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _already_stopped)
    tune_garbage_collection()
    if workers > 1:
        _serve_in_workers(config, host, workers)
        return
    DrainingServer(config, host).run()


# A worker that died within _WORKER_EARLY_DEATH seconds of its start is restarted only after
# _WORKER_RESTART_PAUSE (no fork storm when every start fails).
_WORKER_EARLY_DEATH = 5.0
_WORKER_RESTART_PAUSE = 1.0


def _serve_in_workers(config: uvicorn.Config, host: ServiceHost | HostGroup, workers: int) -> None:
    """Bind the port once, fork ``workers`` children that each serve it with the whole app (the
    imports and the frozen heap shared copy-on-write), pass a stop signal on to every one, and
    restart one that dies while no stop is under way. Each worker drains on its own as usual."""
    sock = config.bind_socket()
    children: dict[int, float] = {}
    stopping = False

    def start_worker() -> None:
        pid = os.fork()
        if pid == 0:  # the worker: serve until stopped, then leave without running the parent's cleanup
            code = 1
            try:
                DrainingServer(config, host).run(sockets=[sock])
                code = 0
            finally:
                os._exit(code)
        children[pid] = time.monotonic()

    for _ in range(workers):
        start_worker()
    log.info("workers_started", workers=workers, pids=sorted(children))

    def forward(stop_signal: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, stop_signal)

    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, forward)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        started = children.pop(pid, None)
        if started is None or stopping:
            continue
        log.error("worker_died", pid=pid, exit_code=os.waitstatus_to_exitcode(status))
        if time.monotonic() - started < _WORKER_EARLY_DEATH:
            time.sleep(_WORKER_RESTART_PAUSE)
        if not stopping:
            start_worker()
    sock.close()


def tune_garbage_collection() -> None:
    """For a server process, once its code is imported and its app built: what exists now lives as
    long as the process, so no collection needs to look at it again (``gc.freeze``); then collect
    young objects far less often (``GC_THRESHOLDS``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _already_stopped(_signal: int, _frame: Any) -> None:
    """The process has drained; exiting normally is all that is left."""


class DrainingServer(uvicorn.Server):
    """uvicorn's server whose stop is the drain of the module docstring."""

    def __init__(self, config: uvicorn.Config, host: ServiceHost) -> None:
        super().__init__(config)
        self.host = host
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    async def startup(self, sockets: list | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit and self._loop is not None:
            # At the loop's next turn, rather than when uvicorn looks at should_exit (every
            # 0.1 s); and not here: a signal handler runs between any two bytecodes.
            self._loop.call_soon_threadsafe(self._begin_drain)
        super().handle_exit(sig, frame)

    def _begin_drain(self) -> None:
        """Steps 1 to 3 of the drain at once: /ready answers 503, the listener is closed, every
        request from now on is answered with Connection: close. Safe to call more than once."""
        if self._draining:
            return
        self._draining = True
        self.host.begin_drain()
        connections = self.server_state.connections
        log.info("http_draining", requests_in_flight=sum(not _idle(c) for c in connections),
                 connections=len(connections), timeout_seconds=self.host.drain_time_left())
        for server in getattr(self, "servers", ()):  # none yet if the signal came during startup
            server.close()  # new connections are refused from here on
        for connection in list(connections):
            getattr(connection, "begin_drain", connection.shutdown)()

    async def shutdown(self, sockets: list | None = None) -> None:
        began = time.monotonic()
        self._begin_drain()  # also when should_exit was set without a signal
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        connections = self.server_state.connections
        await self._until(lambda: all(_idle(c) for c in connections))
        for connection in list(connections):
            getattr(connection, "close_if_idle", connection.shutdown)()
        await self._until(lambda: not self.server_state.tasks)
        tasks = list(self.server_state.tasks)
        if tasks:
            log.error("drain_timeout_requests_cancelled", requests=len(tasks),
                      timeout_seconds=self.host.settings.drain_seconds)
            for task in tasks:
                task.cancel(msg="the drain timeout passed")
            await asyncio.wait(tasks, timeout=1.0)
        log.info("http_drained", seconds=round(time.monotonic() - began, 3))
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _until(self, done: Callable[[], bool]) -> None:
        """Wait until ``done()``, the end of the drain time, or a second Ctrl+C."""
        # Polled, as uvicorn does: no event says "a connection went idle".
        while not done() and not self.force_exit and self.host.drain_time_left() > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(_DRAIN_POLL_SECONDS, self.host.drain_time_left()))


def _idle(connection: Any) -> bool:
    """No request in progress on ``connection`` (not even one whose head is still arriving)."""
    idle = getattr(connection, "idle", None)
    if idle is not None:
        return idle
    cycle = getattr(connection, "cycle", None)  # uvicorn's own protocols: only requests being answered
    return cycle is None or cycle.response_complete


def server_config(app, *, host: str, port: int, max_header_bytes: int, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration every service runs with (tests use it to serve the same way)."""
    options: dict[str, Any] = {
        "log_config": None,  # configured by the caller
        "access_log": False,
        "loop": "uvloop",
        "http": bounded_protocol(max_header_bytes),
        # Used if the h11 protocol is ever chosen: its own bound on a request head (default 16 KiB).
        "h11_max_incomplete_event_size": max_header_bytes + REQUEST_LINE_ALLOWANCE,
        "server_header": False,  # no banner naming the server and its version
        "timeout_graceful_shutdown": 5,
        **overrides,
    }
    return uvicorn.Config(app, host=host, port=port, **options)


# How long a closing connection keeps reading (and discarding) what the client still sends.
LINGER_SECONDS = 2.0
# ... and how much of it, at most.
LINGER_BYTES = 64 * 1024 * 1024


class LingeringClose:
    """The connection's transport, closed in stages (RFC 9112, 9.6): the response is sent, then
    our side is shut (FIN), and what the client still sends is read and discarded until it closes,
    ``LINGER_SECONDS`` pass or ``LINGER_BYTES`` arrive. Closing at once with request bytes unread
    makes the kernel answer with a reset, and a client still sending its body (the one a 413
    refuses) then loses the answer it was sent."""

    def __init__(self, transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self.lingering = False
        self._discarded = 0

    def __getattr__(self, name: str):
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.lingering or self._transport.is_closing():
            return
        self.lingering = True
        if not self._transport.can_write_eof():
            self._transport.close()
            return
        self._transport.write_eof()  # after what is queued: the response goes out whole
        self._transport.resume_reading()  # flow control may have paused it: drain the socket
        self._loop.call_later(LINGER_SECONDS, self._transport.close)

    def discard(self, data: bytes) -> None:
        self._discarded += len(data)
        if self._discarded > LINGER_BYTES:
            self._transport.close()


def bounded_protocol(max_header_bytes: int) -> type[HttpToolsProtocol] | str:
    """httptools' protocol with a bounded request head and problem+json for malformed requests;
    uvicorn's plain one if its internals changed (logged: the head is then bounded only by the
    ASGI middleware, after it was read)."""
    missing = [hook for hook in _PROTOCOL_HOOKS if not callable(getattr(HttpToolsProtocol, hook, None))]
    if missing or not isinstance(STATUS_LINE, dict):
        log.warning("http_protocol_unbounded", missing=missing, uvicorn=uvicorn.__version__)
        return "httptools"
    head_limit = max_header_bytes + REQUEST_LINE_ALLOWANCE

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _reading_head = True
        # Requests whose first byte arrived, and responses finished: equal when the connection is idle.
        _requests_begun = 0
        _responses_sent = 0
        _draining = False

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.transport = LingeringClose(transport, self.loop)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._reading_head = True
            self._requests_begun += 1

        def on_headers_complete(self) -> None:
            self._reading_head = False
            super().on_headers_complete()
            if self._draining and self.cycle is not None:
                self.cycle.keep_alive = False  # answered with Connection: close

        def on_response_complete(self) -> None:
            self._responses_sent += 1
            super().on_response_complete()

        @property
        def idle(self) -> bool:
            return self._requests_begun == self._responses_sent

        def begin_drain(self) -> None:
            """Like uvicorn's shutdown(), but an idle connection stays open: a request already on
            its way is served (with Connection: close) rather than reset."""
            self._draining = True
            if not self.idle:
                super().shutdown()  # the request in progress is answered with Connection: close

        def close_if_idle(self) -> None:
            if self.idle:
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self.transport.lingering:  # answered and closing: the rest of the request is not read
                self.transport.discard(data)
                return
            reading_head_before = self._reading_head
            super().data_received(data)
            # Counted after parsing, so a chunk that completes the head and carries body bytes is
            # not taken for a long head.
            if reading_head_before and self._reading_head and not self.transport.is_closing():
                self._head_bytes += len(data)
                if self._head_bytes > head_limit:
                    self._send_problem(HEADERS_TOO_LARGE(
                        f"The request head passed {head_limit} bytes; the header limit is {max_header_bytes}."))

        def send_400_response(self, msg: str) -> None:
            self._send_problem(MALFORMED_REQUEST("The request is not valid HTTP/1.1."))

        def _send_problem(self, problem: Problem) -> None:
            body = json.dumps(problem.body()).encode()
            head = [STATUS_LINE[problem.status]]
            head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
            head += [b"content-type: " + PROBLEM_JSON.encode() + b"\r\n",
                     b"content-length: " + str(len(body)).encode() + b"\r\n",
                     b"x-content-type-options: nosniff\r\n",
                     b"connection: close\r\n\r\n"]
            self.transport.write(b"".join(head) + body)
            self.transport.close()

    return BoundedHttpToolsProtocol
