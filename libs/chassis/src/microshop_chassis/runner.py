"""Run a service under uvicorn: the one entry point every ``python -m microshop_<service>`` uses,
so all processes start, log and stop the same way.

The HTTP protocol is uvicorn's httptools one with two changes at the connection level, where no
ASGI middleware can act:

- the request head is bounded. llhttp (under httptools) sets no limit of its own on header size,
  and httptools accumulates a header in memory until it is complete: an 8 MB header would be held
  (and forwarded by the gateway) before the app saw it. A head still incomplete past
  ``max_header_bytes`` plus room for the request line gets 431 and the connection is closed.
- uvicorn's own answer to bytes that are not HTTP (a text/plain 400) is problem+json like the rest.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .errors import HEADERS_TOO_LARGE, MALFORMED_REQUEST, PROBLEM_JSON, Problem
from .host import ServiceHost
from .logs import configure_logging

log = structlog.get_logger("microshop.http")

# Room for the request line (method, target, version) on top of the headers: URLs here are short.
REQUEST_LINE_ALLOWANCE = 8 * 1024
# The parts of uvicorn's HttpToolsProtocol (checked against 0.54) the subclass relies on.
_PROTOCOL_HOOKS = ("data_received", "send_400_response", "on_message_begin", "on_headers_complete")


def serve(host: ServiceHost) -> None:
    settings = host.settings
    configure_logging(host.name, settings.log_level, settings.log_format)
    config = server_config(host.app, host=settings.host, port=settings.port,
                           max_header_bytes=settings.max_header_bytes)
    uvicorn.Server(config).run()


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

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._reading_head = True

        def on_headers_complete(self) -> None:
            self._reading_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
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
