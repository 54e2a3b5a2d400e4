"""The admin HTTP API (aiohttp): how a chaos test turns faults on and off while traffic flows.

Every error is an RFC 9457 ``application/problem+json`` body, including the router's own 404/405.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web

from .proxy import Proxy, ProxyRegistry, ToxicExists, ToxicNotFound
from .toxics import ToxicError, parse_toxic

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://microshop.dev/problems/chaos-proxy/"

REGISTRY = web.AppKey("registry", ProxyRegistry)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Problem(Exception):
    """Raise from a handler to answer with a problem+json body."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def problem_response(status: int, code: str, detail: str) -> web.Response:
    body = {
        "type": PROBLEM_BASE + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    return web.json_response(body, status=status, content_type=PROBLEM_JSON)


@web.middleware
async def _problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as exc:
        return problem_response(exc.status, exc.code, exc.detail)
    except web.HTTPException as exc:  # router 404/405
        if exc.status < 400:
            raise
        return problem_response(exc.status, HTTPStatus(exc.status).phrase.lower().replace(" ", "-"), exc.reason)


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.text() or "null")
    except ValueError:
        raise Problem(400, "invalid-json", "request body must be valid JSON") from None


def _proxy(request: web.Request) -> Proxy:
    name = request.match_info["name"]
    proxy = request.app[REGISTRY].proxies.get(name)
    if proxy is None:
        raise Problem(404, "proxy-not-found", f"no proxy named {name!r}")
    return proxy


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def list_proxies(request: web.Request) -> web.Response:
    proxies = request.app[REGISTRY].proxies
    return web.json_response({"proxies": {name: p.to_json() for name, p in proxies.items()}})


async def get_proxy(request: web.Request) -> web.Response:
    return web.json_response(_proxy(request).to_json())


async def update_proxy(request: web.Request) -> web.Response:
    proxy = _proxy(request)
    body = await _json_body(request)
    if not isinstance(body, dict) or set(body) != {"enabled"} or not isinstance(body["enabled"], bool):
        raise Problem(422, "invalid-request", 'body must be {"enabled": true|false}')
    try:
        await proxy.set_enabled(body["enabled"])
    except OSError as exc:
        raise Problem(500, "listen-failed", f"cannot listen on {proxy.listen}: {exc}") from None
    return web.json_response(proxy.to_json())


async def list_toxics(request: web.Request) -> web.Response:
    return web.json_response([t.to_json() for t in _proxy(request).toxics.values()])


async def add_toxic(request: web.Request) -> web.Response:
    proxy = _proxy(request)
    try:
        toxic = parse_toxic(await _json_body(request))
    except ToxicError as exc:
        raise Problem(422, "invalid-toxic", str(exc)) from None
    try:
        proxy.add_toxic(toxic)
    except ToxicExists:
        raise Problem(409, "toxic-exists", f"proxy {proxy.name!r} already has a toxic named {toxic.name!r}") from None
    return web.json_response(toxic.to_json(), status=201)


async def remove_toxic(request: web.Request) -> web.Response:
    proxy = _proxy(request)
    name = request.match_info["toxic"]
    try:
        proxy.remove_toxic(name)
    except ToxicNotFound:
        raise Problem(404, "toxic-not-found", f"proxy {proxy.name!r} has no toxic named {name!r}") from None
    return web.Response(status=204)


async def reset(request: web.Request) -> web.Response:
    try:
        await request.app[REGISTRY].reset()
    except OSError as exc:
        raise Problem(500, "listen-failed", f"cannot listen again: {exc}") from None
    return web.Response(status=204)


def create_app(registry: ProxyRegistry) -> web.Application:
    app = web.Application(middlewares=[_problems])
    app[REGISTRY] = registry
    app.router.add_get("/health", health)
    app.router.add_get("/proxies", list_proxies)
    app.router.add_get("/proxies/{name}", get_proxy)
    app.router.add_post("/proxies/{name}", update_proxy)
    app.router.add_get("/proxies/{name}/toxics", list_toxics)
    app.router.add_post("/proxies/{name}/toxics", add_toxic)
    app.router.add_delete("/proxies/{name}/toxics/{toxic}", remove_toxic)
    app.router.add_post("/reset", reset)
    return app
