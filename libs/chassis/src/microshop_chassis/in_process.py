"""Calls to a service that lives in the same process (the monolith, ``microshop up --monolith``):
the request goes straight to that service's ASGI app, with no socket and no HTTP to write or
parse, and the caller sees the answer as it would from aiohttp.

Everything else about a call stays as it is between processes, on purpose: the client's span,
deadline, token, retries and breaker; the callee's edge middleware, authentication, validation and
problem+json. So the monolith runs the same code paths as the microservices, and what it saves is
exactly the transport (docs/performance.md, `bench --compare`).

The called app runs in a task of its own (with a copy of the caller's context, as a separate
process would see only the headers): what it sets in context variables stays with it, and the
caller's timeout cancels it.

Written here rather than taken from a library: httpx's ASGITransport does this for httpx clients,
but every caller in microshop speaks aiohttp, and aiohttp has no transport to plug an app into.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

Scope = MutableMapping[str, Any]
AsgiApp = Callable[[Scope, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class LocalApps:
    """The services served in this process, by the base URL their callers know them by."""

    def __init__(self) -> None:
        self._apps: dict[tuple[str, str, int | None], AsgiApp] = {}

    def add(self, base_url: str, app: AsgiApp) -> None:
        self._apps[_origin(URL(base_url))] = app

    def find(self, url: URL) -> AsgiApp | None:
        return self._apps.get(_origin(url)) if self._apps else None

    def __len__(self) -> int:
        return len(self._apps)


def _origin(url: URL) -> tuple[str, str, int | None]:
    return url.scheme, (url.host or "").lower(), url.port


class InProcessSession:
    """The part of ``aiohttp.ClientSession`` the chassis uses (``request``, ``get``, ``post``):
    a URL of a service in ``apps`` is answered by its app, any other goes out through ``session``."""

    def __init__(self, session: aiohttp.ClientSession, apps: LocalApps) -> None:
        self._session = session
        self._apps = apps
        # Calls whose app is still running (the answer may be sent before the app returns).
        self._running: set[asyncio.Task] = set()

    @property
    def closed(self) -> bool:
        return self._session.closed

    async def close(self) -> None:
        await self._session.close()

    def get(self, url: str | URL, **options: Any):
        return self.request("GET", url, **options)

    def post(self, url: str | URL, **options: Any):
        return self.request("POST", url, **options)

    def put(self, url: str | URL, **options: Any):
        return self.request("PUT", url, **options)

    def request(self, method: str, url: str | URL, **options: Any):
        target = url if isinstance(url, URL) else URL(url)
        app = self._apps.find(target)
        if app is None:
            return self._session.request(method, url, **options)
        return _LocalCall(app, method, target, self._running, **options)


class _LocalCall:
    """``async with`` one in-process request, as aiohttp's request context manager is used."""

    def __init__(self, app: AsgiApp, method: str, url: URL, running: set[asyncio.Task], *, json: Any = None,
                 data: bytes | None = None,
                 params: Any = None, headers: dict[str, str] | None = None,
                 timeout: aiohttp.ClientTimeout | None = None, **_transport_options: Any) -> None:
        # The options left (redirects, decompression, automatic headers) concern a connection only.
        self.app = app
        self.running = running
        self.method = method
        self.url = url.update_query(params) if params else url
        self.headers = CIMultiDict(headers or {})
        if json is not None:
            self.body = _json_bytes(json)
            self.headers.setdefault("Content-Type", "application/json")
        else:
            self.body = data or b""
        self.timeout = timeout.total if timeout is not None else None
        self.response: LocalResponse | None = None

    async def __aenter__(self) -> LocalResponse:
        scope = self._scope()
        exchange = _Exchange(self.body)
        call = asyncio.ensure_future(self.app(scope, exchange.receive, exchange.send))
        self.running.add(call)
        call.add_done_callback(self.running.discard)
        call.add_done_callback(exchange.app_returned)
        try:
            await asyncio.wait_for(asyncio.shield(exchange.answered), self.timeout)
        except BaseException:
            call.cancel()
            raise
        finally:
            exchange.done.set()
        if exchange.status is None:  # the app ended without answering: as a server that hung up
            failure = call.exception() if call.done() and not call.cancelled() else None
            raise aiohttp.ServerDisconnectedError() from failure
        self.response = LocalResponse(self.method, self.url, exchange)
        return self.response

    async def __aexit__(self, *_exc: object) -> None:
        return None

    def _scope(self) -> Scope:
        url = self.url
        headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.headers.items()]
        headers.append((b"host", (url.raw_host or "").encode() + (f":{url.port}".encode() if url.port else b"")))
        if self.body:
            headers.append((b"content-length", str(len(self.body)).encode()))
        return {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": self.method, "scheme": url.scheme, "path": url.path, "raw_path": url.raw_path.encode(),
            "query_string": url.raw_query_string.encode(), "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 0), "server": (url.host or "", url.port),
        }


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


class _Exchange:
    """The ASGI ``receive`` and ``send`` of one request: the body in, the answer collected."""

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body
        self.status: int | None = None
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done = asyncio.Event()

    def app_returned(self, call: asyncio.Task) -> None:
        if not call.cancelled():
            call.exception()  # looked at (here or by the caller): no "never retrieved" warning
        if not self.answered.done():
            self.answered.set_result(None)

    async def receive(self) -> dict:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.done.wait()  # as a connection would: nothing more until the exchange is over
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.raw_headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))
            if not message.get("more_body", False) and not self.answered.done():
                self.answered.set_result(None)


class LocalResponse:
    """What the chassis reads of an aiohttp response."""

    def __init__(self, method: str, url: URL, exchange: _Exchange) -> None:
        self.method = method
        self.url = url
        self.status: int = exchange.status or 500
        self.raw_headers = tuple(exchange.raw_headers)
        self.headers = CIMultiDictProxy(CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in exchange.raw_headers))
        self._body = b"".join(exchange.chunks)

    @property
    def request_info(self) -> aiohttp.RequestInfo:
        return aiohttp.RequestInfo(self.url, self.method, CIMultiDictProxy(CIMultiDict()), self.url)

    async def read(self) -> bytes:
        return self._body

    async def text(self, encoding: str = "utf-8") -> str:
        return self._body.decode(encoding, errors="replace")

    async def json(self, *, content_type: str | None = "application/json", **_options: Any) -> Any:
        given = self.headers.get("Content-Type", "").split(";")[0].strip()
        json_like = content_type == "application/json" and (given == content_type or given.endswith("+json"))
        if content_type is not None and not json_like and given != content_type:  # as aiohttp checks it
            raise aiohttp.ContentTypeError(self.request_info, (), status=self.status,
                                           message=f"unexpected content type {self.headers.get('Content-Type')!r}")
        return json.loads(self._body) if self._body else None

    def raise_for_status(self) -> None:
        if self.status >= 400:
            raise aiohttp.ClientResponseError(self.request_info, (), status=self.status, message="")
