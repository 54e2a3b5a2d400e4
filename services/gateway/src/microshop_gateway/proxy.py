"""Forwarding one request to a service: bytes in, bytes out.

A proxy cannot tell whether repeating a request is safe, so it repeats one only to another replica
of the service, and only when the first could not have acted on it or acting twice does no harm:
a request refused at connect (it reached no one), or a read (GET, HEAD, OPTIONS) or a request
carrying an ``Idempotency-Key`` whose replica died before answering. Never after an answer, and
never after a timeout (the replica may still be working on it).
"""

from __future__ import annotations

import time
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import structlog
from fastapi import Request, Response
from multidict import CIMultiDict
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from yarl import URL

from microshop_chassis.context import deadline_var, request_id_var
from microshop_chassis.discovery import Endpoints, FixedEndpoint
from microshop_chassis.errors import ProblemType
from microshop_chassis.http_client import HttpSession
from microshop_chassis.metrics import ServiceMetrics
from microshop_chassis.telemetry import inject_headers, tracer

from .settings import Upstream

log = structlog.get_logger("microshop.gateway")

# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection, not to the message. Host and
# Content-Length are recomputed for the next hop; Proxy-* headers are matched by prefix.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}
)
# Set by the gateway on every forwarded request, so whatever the client sent is replaced
# (X-Forwarded-For is extended instead: the client's address is appended).
_SET_ON_REQUEST = frozenset(
    {"x-request-id", "x-request-timeout", "traceparent", "tracestate",
     "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix"}
)
# The gateway's own server adds Date and Server, and its edge middleware X-Request-ID (the same
# id the service saw): the service's copies would be duplicates.
_SET_ON_RESPONSE = frozenset({"date", "server", "x-request-id"})
# aiohttp adds these when absent; a proxy sends only what the client sent.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")

# Reads, which a replica that died before answering may be asked again by another.
_REPEATABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Other replicas one request may be sent to after the first could not be reached.
_MAX_FAILOVERS = 3

INVALID_PATH = ProblemType("invalid-path", 400)
UPSTREAM_TIMEOUT = ProblemType("upstream-timeout", 504, "Upstream timed out")
UPSTREAM_UNAVAILABLE = ProblemType("upstream-unavailable", 503, "Upstream unavailable", headers={"Retry-After": "1"})
UPSTREAM_BAD_RESPONSE = ProblemType("upstream-bad-response", 502, "Bad upstream reply")


async def forward(request: Request, upstream: Upstream, path: str, time_limit: float, *,
                  session: HttpSession, metrics: ServiceMetrics, endpoints: Endpoints | None = None,
                  span_tracer: trace.Tracer | None = None) -> Response:
    """Send the request to a replica of the service (its resource prefix + ``/path``) and answer
    with the replica's reply as it is. ``endpoints``: the service's replicas (default: its URL)."""
    if ".." in path.split("/"):  # a dot-segment could climb out of a base URL that has a path
        raise INVALID_PATH("The path may not contain '..' segments.")
    endpoints = endpoints or FixedEndpoint(upstream.base_url)
    deadline = time.monotonic() + _call_timeout(time_limit)
    target = _upstream_target(request.scope, upstream, path)
    body = await request.body()
    repeatable = request.method in _REPEATABLE_METHODS or "idempotency-key" in request.headers
    tried: set[str] = set()
    while True:
        base_url = endpoints.pick(tried)
        try:
            with (span_tracer or tracer("microshop.gateway")).start_as_current_span(
                f"{request.method} {upstream.name}", kind=SpanKind.CLIENT,
                attributes={"http.request.method": request.method, "server.address": upstream.name},
            ) as span:
                status, raw_headers, content = await _send(request, upstream, base_url, target, body, deadline,
                                                           session=session, metrics=metrics, endpoints=endpoints)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
        except _Unreachable as unreachable:
            tried.add(base_url)
            again = (not unreachable.sent or repeatable) and len(tried) <= _MAX_FAILOVERS
            if again and endpoints.alternatives(tried) and deadline > time.monotonic():
                log.info("upstream_failed_over", service=upstream.name, method=request.method, replica=base_url)
                continue
            raise unreachable.problem from unreachable.__cause__
        response = Response(content, status_code=status)  # sets Content-Length for the new hop
        response.raw_headers.extend(client_response_headers(raw_headers, upstream, base_url))
        return response


class _Unreachable(Exception):
    def __init__(self, problem: Exception, *, sent: bool) -> None:
        self.problem = problem
        self.sent = sent


async def _send(request: Request, upstream: Upstream, base_url: str, target: str, body: bytes, deadline: float,
                *, session: HttpSession, metrics: ServiceMetrics, endpoints: Endpoints):
    """One attempt at one replica: its status, raw headers and body."""
    service, method, path = upstream.name, request.method, target
    timeout = max(0.001, deadline - time.monotonic())  # 0 would mean "no timeout"
    headers = upstream_request_headers(request, upstream, timeout)
    start = time.perf_counter()
    outcome = "error"
    reached = True
    endpoints.started(base_url)
    try:
        async with session.get().request(
            method,
            URL(base_url + target, encoded=True),
            data=body or None,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,  # a redirect is the client's to follow, with its own URL
            auto_decompress=False,  # pass compressed bodies through with their Content-Encoding
            skip_auto_headers=_NO_AUTO_HEADERS,
        ) as reply:
            content = await reply.read()
            outcome = str(reply.status)
            return reply.status, reply.raw_headers, content
    except TimeoutError as exc:  # aiohttp's connect and read timeouts are TimeoutErrors too
        outcome = "timeout"
        _log_failure(service, method, path, exc)
        raise UPSTREAM_TIMEOUT(f"{service} did not answer within {timeout:g} s.", service=service) from exc
    except aiohttp.ClientConnectionError as exc:
        outcome = "unreachable"
        reached = False
        _log_failure(service, method, path, exc)
        problem = UPSTREAM_UNAVAILABLE(f"{service} is not reachable (connection refused or reset).",
                                       service=service)
        # Refused at connect: the request never left. Reset or cut off: it may have arrived.
        raise _Unreachable(problem, sent=not isinstance(exc, aiohttp.ClientConnectorError)) from exc
    except aiohttp.ClientError as exc:  # the service answered something that is not valid HTTP
        outcome = "bad-response"
        _log_failure(service, method, path, exc)
        raise UPSTREAM_BAD_RESPONSE(f"{service} sent a reply that could not be read.", service=service) from exc
    finally:
        endpoints.finished(base_url, reached=reached)
        metrics.series(metrics.client_requests, service, method, outcome).inc()
        metrics.series(metrics.client_duration, service, method).observe(time.perf_counter() - start)


def upstream_request_headers(request: Request, upstream: Upstream, timeout: float) -> CIMultiDict[str]:
    incoming = request.headers
    named_in_connection = _connection_tokens(incoming.getlist("connection"))
    headers: CIMultiDict[str] = CIMultiDict()
    for raw_name, raw_value in incoming.raw:  # ASGI header names are lower case already
        name = raw_name.decode("latin-1")
        if _is_hop_by_hop(name, named_in_connection) or name in _SET_ON_REQUEST:
            continue
        headers.add(name, raw_value.decode("latin-1"))
    headers["X-Forwarded-For"] = _forwarded_for(incoming.getlist("x-forwarded-for"), request.client)
    headers["X-Forwarded-Proto"] = request.scope["scheme"]
    headers["X-Forwarded-Host"] = incoming.get("host", "")
    # Lets a service build its own public URLs: this prefix + one of its paths is public.
    headers["X-Forwarded-Prefix"] = upstream.forwarded_prefix
    # The service's own calls then share this deadline instead of outliving the gateway's wait.
    headers["X-Request-Timeout"] = f"{timeout:.3f}"
    request_id = request_id_var.get()
    if request_id:
        headers["X-Request-ID"] = request_id
    inject_headers(headers)  # traceparent of the gateway's span: the service's span is its child
    return headers


def client_response_headers(raw_headers, upstream: Upstream, base_url: str | None = None) -> list[tuple[bytes, bytes]]:
    """The service's response headers minus hop-by-hop ones, as ASGI wants them (lower-case names),
    with Location pointing at the gateway rather than at the service."""
    decoded = [(name.decode("latin-1").lower(), value) for name, value in raw_headers]
    named_in_connection = _connection_tokens(
        value.decode("latin-1") for name, value in decoded if name == "connection"
    )
    returned = []
    for name, value in decoded:
        if _is_hop_by_hop(name, named_in_connection) or name in _SET_ON_RESPONSE:
            continue
        if name in ("location", "content-location"):
            value = public_location(value.decode("latin-1"), upstream, base_url).encode("latin-1")
        returned.append((name.encode("latin-1"), value))
    return returned


def public_location(location: str, upstream: Upstream, base_url: str | None = None) -> str:
    """A service's Location names its own address (``http://orders:8103/orders/7``, the replica's
    ``base_url``) or its own path (``/orders/7``); the client must be sent to ``/api/orders/7``
    on the gateway."""
    parts = urlsplit(location)
    own = {urlsplit(upstream.base_url).netloc, urlsplit(base_url or upstream.base_url).netloc}
    if parts.netloc and parts.netloc not in own:
        return location  # somewhere else entirely
    if not parts.netloc and not location.startswith("/"):
        return location  # relative: the client resolves it against the public URL already
    path = parts.path
    public = upstream.public_prefix
    if not (path == public or path.startswith(public + "/")):  # a service may know its prefix
        path = upstream.forwarded_prefix + path
    return urlunsplit(("", "", path, parts.query, parts.fragment))


def _upstream_target(scope, upstream: Upstream, path: str) -> str:
    """Path and query for the service, encoded exactly as the client sent them (``%2F`` stays)."""
    public = upstream.public_prefix.encode()
    raw_path: bytes = scope.get("raw_path") or b""
    if raw_path == public or raw_path.startswith(public + b"/"):
        rest = raw_path[len(public):].decode("latin-1")
    else:  # no raw path from the server, or an encoded service name: re-encode the decoded path
        rest = "/" + quote(path) if path else ""
    # /api/users/ is the service's root; /api/orders (no slash) is the orders collection.
    target = upstream.resource_prefix + rest if upstream.resource_prefix else (rest or "/")
    query: bytes = scope["query_string"]
    return f"{target}?{query.decode('latin-1')}" if query else target


def _call_timeout(time_limit: float) -> float:
    """The gateway's limit, shortened when the client said it waits less (X-Request-Timeout)."""
    deadline = deadline_var.get()
    if deadline is None:
        return time_limit
    return max(0.001, min(time_limit, deadline - time.monotonic()))  # 0 would mean "no timeout"


def _forwarded_for(incoming: list[str], client) -> str:
    """The incoming chain plus the client's address. uvicorn already took the client address from
    the chain when the peer is a trusted proxy (FORWARDED_ALLOW_IPS): then it is not added twice."""
    hops = [hop.strip() for value in incoming for hop in value.split(",") if hop.strip()]
    address = client.host if client else "unknown"
    if not hops or hops[-1] != address:
        hops.append(address)
    return ", ".join(hops)


def _connection_tokens(values) -> set[str]:
    """Header names listed in Connection, which makes them hop-by-hop as well."""
    return {token.strip().lower() for value in values for token in value.split(",") if token.strip()}


def _is_hop_by_hop(name: str, named_in_connection: set[str]) -> bool:
    return name in HOP_BY_HOP or name.startswith("proxy-") or name in named_in_connection


def _log_failure(service: str, method: str, path: str, exc: BaseException) -> None:
    # Never the body, the query string or any header: they may carry credentials.
    log.warning("upstream_failed", service=service, method=method, path="/" + path, error=describe_error(exc))


def describe_error(exc: BaseException) -> str:
    message = str(exc)  # empty for a bare TimeoutError
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
