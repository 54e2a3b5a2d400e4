"""The console's chaos page, ``/chaos``: inject and heal network faults and run `verify`, through
the supervisor's control socket (cli: control.py and chaos_control.py; ``--control-socket``).

Plain HTML forms POST to ``/chaos/faults``, ``/chaos/heal`` and ``/chaos/verify``; each answers
303 back to ``/chaos`` with a one-time flash (a cookie) saying what happened. The console has no
login - it is for the host's own user, on loopback - so a POST that changes the system must come
from the console's own page: another site's form (Origin, Sec-Fetch-Site), a DNS-rebound name
(Host) and framing (X-Frame-Options, frame-ancestors) are refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from microshop_chassis.errors import Problem

from .console import templates

DEFAULT_SETTLE_SECONDS = 30.0
MAX_SETTLE_SECONDS = 300.0
# Beyond the settle time: verify's own reads of every service (up to 30 s each) and a margin.
VERIFY_READ_SECONDS = 90.0
CONTROL_TIMEOUT_SECONDS = 15.0
MAX_FORM_BYTES = 16 * 1024
FLASH_COOKIE = "microshop_chaos_flash"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
NUMBER_FIELDS = ("ms", "jitter_ms", "percent", "seconds", "settle_seconds")
FAULT_FIELDS = ("fault", "target", "mode", *NUMBER_FIELDS[:-1])
# The page must not be framed by another site (a click there would be a same-origin POST).
NO_FRAMING = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}
HOW_TO_GET_PROXIES = "microshop up --chaos-proxies"


class SupervisorUnavailable(Exception):
    """No supervisor answers on the control socket (none given, not there yet, or gone)."""


class Supervisor:
    """The supervisor's control socket, as the console speaks to it: JSON in, JSON out."""

    def __init__(self, socket: Path | None) -> None:
        self.socket = socket

    async def call(self, method: str, action: str, body: dict | None = None,
                   timeout: float = CONTROL_TIMEOUT_SECONDS) -> dict[str, Any]:
        if self.socket is None:
            raise SupervisorUnavailable("this console was started without --control-socket")
        if not self.socket.exists():
            raise SupervisorUnavailable(f"no supervisor control socket at {self.socket} (the system is starting, "
                                        "stopped, or its data directory's path is too long for a socket)")
        connector = aiohttp.UnixConnector(path=str(self.socket))
        try:
            limit = aiohttp.ClientTimeout(total=timeout)
            async with aiohttp.ClientSession(connector=connector, timeout=limit) as http, \
                    http.request(method, f"http://supervisor/{action}", json=body) as reply:
                answer = await reply.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SupervisorUnavailable(f"the supervisor did not answer on {self.socket}: {exc!r}") from exc
        if not isinstance(answer, dict):
            raise SupervisorUnavailable(f"the supervisor answered {answer!r}")
        return answer


@dataclass
class VerifyRun:
    at: float
    answer: dict[str, Any]


class ChaosPage:
    """The page's state: where the supervisor is, and the last verify run from here."""

    def __init__(self, control_socket: Path | None) -> None:
        self.supervisor = Supervisor(control_socket)
        self.last_verify: VerifyRun | None = None


def create_chaos_console(control_socket: Path | None) -> APIRouter:
    page = ChaosPage(control_socket)
    router = APIRouter(include_in_schema=False)
    changes = APIRouter(include_in_schema=False, dependencies=[Depends(same_origin)])

    @router.get("/chaos", response_class=HTMLResponse, name="chaos_page")
    async def chaos_page(request: Request) -> Response:
        context: dict[str, Any] = {"flash": read_flash(request.cookies.get(FLASH_COOKIE)), "unavailable": None,
                                   "how": HOW_TO_GET_PROXIES, "verify": page.last_verify,
                                   "default_settle": DEFAULT_SETTLE_SECONDS, "max_settle": MAX_SETTLE_SECONDS}
        try:
            answer = await page.supervisor.call("GET", "chaos")
        except SupervisorUnavailable as exc:
            context["unavailable"] = str(exc)
        else:
            if not answer.get("ok"):
                context["unavailable"] = answer.get("error", "the supervisor refused")
            elif not answer.get("proxies"):
                context["unavailable"] = "this system runs without chaos proxies"
            else:
                context.update(targets=answer["targets"], faults=answer["faults"])
        response = templates.TemplateResponse(request, "chaos.html", context, headers=NO_FRAMING)
        if FLASH_COOKIE in request.cookies:
            response.delete_cookie(FLASH_COOKIE, path="/chaos")
        return response

    @changes.post("/chaos/faults", name="chaos_inject")
    async def inject(request: Request) -> Response:
        try:
            body = form_to_request(await read_form(request), FAULT_FIELDS)
        except ValueError as exc:
            return back(False, str(exc))
        answer = await _call(page.supervisor, "POST", "chaos", body)
        if not answer.get("ok"):
            return back(False, f"not injected: {answer.get('error')}")
        heals = f"; {answer['target']} heals at {answer['heals_at']}" if answer.get("heals_at") else \
            "; until healed"
        return back(True, f"injected {answer['applied']}{heals}")

    @changes.post("/chaos/heal", name="chaos_heal")
    async def heal(request: Request) -> Response:
        target = (await read_form(request)).get("target") or None
        answer = await _call(page.supervisor, "POST", "heal", {"target": target})
        if not answer.get("ok"):
            return back(False, f"not healed: {answer.get('error')}")
        return back(True, f"healed {target or 'every target'}")

    @changes.post("/chaos/verify", name="chaos_verify")
    async def run_verify(request: Request) -> Response:
        try:
            body = form_to_request(await read_form(request), ("settle_seconds",))
        except ValueError as exc:
            return back(False, str(exc))
        settle = body.get("settle_seconds", DEFAULT_SETTLE_SECONDS)
        if not 0 <= settle <= MAX_SETTLE_SECONDS:
            return back(False, f"the settle time is 0 to {MAX_SETTLE_SECONDS:g} seconds, not {settle:g}")
        answer = await _call(page.supervisor, "POST", "verify", {"settle_seconds": settle},
                             timeout=settle + VERIFY_READ_SECONDS)
        if not answer.get("ok"):
            return back(False, f"verify did not run: {answer.get('error')}")
        page.last_verify = VerifyRun(time.time(), answer)
        return back(answer["passed"], verify_summary(answer))

    router.include_router(changes)
    return router


async def _call(supervisor: Supervisor, method: str, action: str, body: dict, **options: Any) -> dict[str, Any]:
    try:
        return await supervisor.call(method, action, body, **options)
    except SupervisorUnavailable as exc:
        return {"ok": False, "error": str(exc)}


def same_origin(request: Request) -> None:
    """Refuse a state-changing request a browser sent for another site (a cross-site form or
    fetch), or to a name that is not this host's (DNS rebinding: evil.example resolving to
    127.0.0.1). A client that is no browser sends neither header, and is not a cross-site risk."""
    host = request.headers.get("host", "")
    hostname = urlsplit(f"//{host}").hostname or ""
    bound = request.scope.get("server") or ("",)
    if hostname not in LOOPBACK_NAMES | {str(bound[0])}:
        raise Problem(403, f"the console answers changes for its own address only, not for host {host!r}",
                      type="cross-origin-request", title="Cross-origin request refused")
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site != "same-origin":
        raise Problem(403, f"a change must come from the console's own page (Sec-Fetch-Site: {fetch_site})",
                      type="cross-origin-request", title="Cross-origin request refused")
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{host}":
        raise Problem(403, f"a change must come from the console's own page, not from {origin}",
                      type="cross-origin-request", title="Cross-origin request refused")


async def read_form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body, bounded, one value per field."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Problem(413, f"a form is at most {MAX_FORM_BYTES} bytes")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0].strip() for name, values in fields.items()}


def form_to_request(form: dict[str, str], allowed: tuple[str, ...]) -> dict[str, Any]:
    """The JSON the supervisor takes: the allowed fields that were filled in, numbers as numbers
    (ranges are the supervisor's to check, so they are checked in one place)."""
    body: dict[str, Any] = {}
    for name in allowed:
        value = form.get(name, "")
        if value == "":
            continue
        if name in NUMBER_FIELDS:
            try:
                body[name] = float(value)
            except ValueError:
                raise ValueError(f"{name.replace('_', ' ')} must be a number, not {value!r}") from None
        else:
            body[name] = value
    return body


def verify_summary(answer: dict[str, Any]) -> str:
    checks = answer["checks"]
    failed = [check for check in checks if not check["ok"]]
    waited = f"after {answer['settle_seconds']:g} s"
    if not failed:
        return f"verify: all {len(checks)} invariants hold ({waited})"
    names = ", ".join(f"{check['number']}. {check['name']}" for check in failed)
    return f"verify: {len(failed)} of {len(checks)} invariants violated ({waited}): {names}"


def back(ok: bool, text: str) -> Response:
    """303 to the page, which shows ``text`` once."""
    response = RedirectResponse("/chaos", status_code=303)
    response.set_cookie(FLASH_COOKIE, write_flash(ok, text), path="/chaos", httponly=True, samesite="strict")
    return response


def write_flash(ok: bool, text: str) -> str:
    # Without the padding: "=" would make the cookie a quoted string.
    return base64.urlsafe_b64encode(json.dumps({"ok": ok, "text": text[:1500]}).encode()).decode().rstrip("=")


def read_flash(value: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        flash = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, binascii.Error):
        return None
    return flash if isinstance(flash, dict) and isinstance(flash.get("text"), str) else None
